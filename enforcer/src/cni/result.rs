//! The CNI result (`interfaces`, `ips`, `routes`) printed on success of ADD,
//! and the `prevResult` read back by CHECK.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// An interface created by the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The network namespace path, for interfaces inside the container;
    /// absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` for CNI versions before 1.0.0, absent from 1.0.0 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length (`10.200.0.5/32`).
    pub address: String,
    /// The gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Index into `interfaces` of the interface holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix.
    pub dst: String,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<Ipv4Addr>,
}

/// The result of a successful ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// The CNI version of the configuration.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Host side first, then the container side.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// The container's address.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes in the container.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS settings (this plugin sets none).
    #[serde(default)]
    pub dns: serde_json::Map<String, serde_json::Value>,
}

/// Inputs of [`CniResult::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultInput<'a> {
    /// `cniVersion` of the configuration.
    pub cni_version: &'a str,
    /// Host side name.
    pub host_ifname: &'a str,
    /// Host side MAC.
    pub host_mac: &'a str,
    /// Container side name.
    pub container_ifname: &'a str,
    /// Container side MAC.
    pub container_mac: &'a str,
    /// The network namespace path.
    pub netns: &'a str,
    /// The container's address.
    pub ipv4: Ipv4Addr,
    /// The gateway.
    pub gateway: Ipv4Addr,
}

impl CniResult {
    /// The result of an ADD, shaped for `cni_version`.
    pub fn new(i: &ResultInput<'_>) -> Self {
        let version = (i.cni_version != "1.0.0").then(|| "4".to_owned());
        Self {
            cni_version: i.cni_version.to_owned(),
            interfaces: vec![
                Interface {
                    name: i.host_ifname.to_owned(),
                    mac: i.host_mac.to_owned(),
                    sandbox: None,
                },
                Interface {
                    name: i.container_ifname.to_owned(),
                    mac: i.container_mac.to_owned(),
                    sandbox: Some(i.netns.to_owned()),
                },
            ],
            ips: vec![IpConfig {
                version,
                address: format!("{}/32", i.ipv4),
                gateway: Some(i.gateway),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".to_owned(),
                gw: Some(i.gateway),
            }],
            dns: serde_json::Map::new(),
        }
    }

    /// Reads a `prevResult`; `None` when it is not a result this plugin
    /// understands.
    pub fn from_prev(value: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(value.clone()).ok()
    }

    /// The first IPv4 address of the result, without prefix length.
    pub fn first_ipv4(&self) -> Option<Ipv4Addr> {
        self.ips.iter().find_map(|ip| {
            let addr = ip.address.split('/').next()?;
            addr.parse().ok()
        })
    }

    /// The JSON text printed on stdout.
    pub fn to_json(&self) -> String {
        // Strings, addresses and numbers only: cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn input(v: &str) -> ResultInput<'_> {
        ResultInput {
            cni_version: v,
            host_ifname: "lxc0123456789a",
            host_mac: "aa:bb:cc:dd:ee:ff",
            container_ifname: "eth0",
            container_mac: "11:22:33:44:55:66",
            netns: "/var/run/netns/p",
            ipv4: Ipv4Addr::new(10, 200, 0, 5),
            gateway: Ipv4Addr::new(169, 254, 1, 1),
        }
    }

    #[test]
    fn shape_1_0_0() {
        let r = CniResult::new(&input("1.0.0"));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "lxc0123456789a", "mac": "aa:bb:cc:dd:ee:ff"},
                    {"name": "eth0", "mac": "11:22:33:44:55:66", "sandbox": "/var/run/netns/p"}
                ],
                "ips": [{"address": "10.200.0.5/32", "gateway": "169.254.1.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
                "dns": {}
            })
        );
    }

    #[test]
    fn shape_before_1_0_0_has_ip_version() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let r = CniResult::new(&input(v));
            let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
            assert_eq!(j["ips"][0]["version"], "4");
            assert_eq!(j["cniVersion"], v);
        }
    }

    #[test]
    fn prev_result_round_trip() {
        let r = CniResult::new(&input("1.0.0"));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let back = CniResult::from_prev(&v).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.first_ipv4(), Some(Ipv4Addr::new(10, 200, 0, 5)));
        assert!(CniResult::from_prev(&serde_json::json!({"ips": "x"})).is_none());
    }
}
