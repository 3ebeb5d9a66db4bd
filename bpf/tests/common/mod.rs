//! Test harness for the datapath: loads `DATAPATH_OBJECT` and `OVERLAY_OBJECT`
//! with private (shared between the two) maps,
//! fills them, runs the programs with BPF_PROG_TEST_RUN and reads the side
//! effects. Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs.
#![allow(dead_code)]

pub mod netns;
pub mod packet;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader};
use palisade_bpf::abi::{
    AuthKey, AuthValue, CtKey, CtValue, EndpointInfo, EndpointKey, Event, FragKey, FragValue,
    IpcacheKey, IpcacheValue, MetricsValue, PolicyKey, PolicyKeyData, PolicyValue, Reason, State,
    TunnelValue, COUNTER_EVENTS_LOST,
};
use palisade_bpf::{names, DATAPATH_OBJECT, OVERLAY_OBJECT};

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// `sizeof(struct __sk_buff)` and the offset of its `ifindex` field (uapi).
const SKB_CTX_SIZE: usize = 192;
const SKB_IFINDEX_OFF: usize = 40;
/// Offset of `mark` in `struct __sk_buff` (uapi).
const SKB_MARK_OFF: usize = 8;

/// ifindex of the loopback device: the only interface BPF_PROG_TEST_RUN can
/// run a tc program on without creating one (see `Datapath::run`).
pub const LO_IFINDEX: u32 = 1;

static BPFFS: Mutex<bool> = Mutex::new(false);
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Mounts bpffs on /sys/fs/bpf if it is not mounted (aya pins maps declared
/// with LIBBPF_PIN_BY_NAME and has no way to turn pinning off).
fn ensure_bpffs() -> Result<()> {
    let mut done = BPFFS.lock().map_err(|_| anyhow!("bpffs lock poisoned"))?;
    if *done {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let mounted = mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
            && l.split_whitespace().nth(2) == Some("bpf")
    });
    if !mounted {
        let st = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .context("running mount -t bpf")?;
        anyhow::ensure!(
            st.success(),
            "mount -t bpf bpf /sys/fs/bpf failed (not root?)"
        );
    }
    *done = true;
    Ok(())
}

/// One loaded copy of the datapath with its own (unpinned) maps.
pub struct Datapath {
    ebpf: Ebpf,
    overlay: Ebpf,
    events: RingBuf<MapData>,
}

impl Datapath {
    pub fn load() -> Result<Self> {
        ensure_bpffs()?;
        // A fresh pin directory per load so that no two tests share maps; the
        // pins are removed right after loading (the maps live on through
        // our fds), so nothing is left behind even if a test panics.
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/palisade-bpf-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let load = |object: &[u8]| {
            EbpfLoader::new()
                .default_map_pin_directory(&dir)
                .map_max_entries(names::CT, 1024)
                .map_max_entries(names::FRAG, 256)
                .map_max_entries(names::ENDPOINTS, 64)
                .map_max_entries(names::IPCACHE, 256)
                .map_max_entries(names::TUNNEL, 64)
                .map_max_entries(names::POLICY, 1024)
                .map_max_entries(names::AUTH, 64)
                .map_max_entries(names::EVENTS, 1 << 16)
                .load(object)
        };
        // The overlay object is loaded second, while the pins exist, so
        // that it shares the maps like in the agent.
        let loaded = load(DATAPATH_OBJECT).and_then(|e| load(OVERLAY_OBJECT).map(|o| (e, o)));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut ebpf, mut overlay) =
            loaded.map_err(|e| anyhow!("loading the datapath objects: {e:?}"))?;
        for (object, progs) in [
            (&mut ebpf, names::PROGRAMS),
            (&mut overlay, names::OVERLAY_PROGRAMS),
        ] {
            for prog in progs {
                let p: &mut SchedClassifier = object
                    .program_mut(prog)
                    .ok_or_else(|| anyhow!("no program {prog}"))?
                    .try_into()?;
                p.load()
                    .with_context(|| format!("verifier rejected {prog}"))?;
            }
        }
        let events = RingBuf::try_from(
            ebpf.take_map(names::EVENTS)
                .ok_or_else(|| anyhow!("no events map"))?,
        )?;
        Ok(Self {
            ebpf,
            overlay,
            events,
        })
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("no map {name}"))
    }

    pub fn set_endpoint(&mut self, ifindex: u32, info: EndpointInfo) -> Result<()> {
        let mut m: HashMap<_, EndpointKey, EndpointInfo> =
            HashMap::try_from(self.map(names::ENDPOINTS)?)?;
        m.insert(EndpointKey::new(ifindex), info, 0)?;
        Ok(())
    }

    pub fn set_ipcache(&mut self, addr: Ipv4Addr, prefix_len: u8, identity: u32) -> Result<()> {
        let mut m: LpmTrie<_, u32, IpcacheValue> = LpmTrie::try_from(self.map(names::IPCACHE)?)?;
        m.insert(
            &IpcacheKey::new(addr, prefix_len)?.lpm_key(),
            IpcacheValue::new(identity),
            0,
        )?;
        Ok(())
    }

    /// Like [`Self::set_ipcache`] for a /32 endpoint of this node.
    pub fn set_local_endpoint_ip(&mut self, addr: Ipv4Addr, identity: u32) -> Result<()> {
        let mut m: LpmTrie<_, u32, IpcacheValue> = LpmTrie::try_from(self.map(names::IPCACHE)?)?;
        m.insert(
            &IpcacheKey::new(addr, 32)?.lpm_key(),
            IpcacheValue::local_endpoint(identity),
            0,
        )?;
        Ok(())
    }

    pub fn set_tunnel(&mut self, addr: Ipv4Addr, prefix_len: u8, node: Ipv4Addr) -> Result<()> {
        let mut m: LpmTrie<_, u32, TunnelValue> = LpmTrie::try_from(self.map(names::TUNNEL)?)?;
        m.insert(
            &IpcacheKey::new(addr, prefix_len)?.lpm_key(),
            TunnelValue::new(node),
            0,
        )?;
        Ok(())
    }

    pub fn set_policy(&mut self, key: PolicyKey, value: PolicyValue) -> Result<()> {
        let mut m: LpmTrie<_, PolicyKeyData, PolicyValue> =
            LpmTrie::try_from(self.map(names::POLICY)?)?;
        m.insert(&key.lpm_key(), value, 0)?;
        Ok(())
    }

    pub fn remove_policy(&mut self, key: PolicyKey) -> Result<()> {
        let mut m: LpmTrie<_, PolicyKeyData, PolicyValue> =
            LpmTrie::try_from(self.map(names::POLICY)?)?;
        m.remove(&key.lpm_key())?;
        Ok(())
    }

    /// The one event of the run (draining the ring buffer), checked for
    /// type and reason.
    pub fn one_event(&mut self, ty: u8, reason: Reason) -> Result<Event> {
        let evs = self.events()?;
        anyhow::ensure!(evs.len() == 1, "expected one event, got {evs:#?}");
        let ev = evs[0];
        anyhow::ensure!(
            ev.r#type == ty && ev.reason() == Some(reason),
            "expected type {ty} {reason:?}, got {ev:#?}"
        );
        Ok(ev)
    }

    pub fn set_auth(&mut self, key: AuthKey, expires_ns: u64) -> Result<()> {
        let mut m: HashMap<_, AuthKey, AuthValue> = HashMap::try_from(self.map(names::AUTH)?)?;
        m.insert(key, AuthValue { expires_ns }, 0)?;
        Ok(())
    }

    pub fn set_policy_rev(&mut self, rev: u32) -> Result<()> {
        let mut m: Array<_, State> = Array::try_from(self.map(names::STATE)?)?;
        m.set(0, State::new(rev), 0)?;
        Ok(())
    }

    pub fn ct(&mut self, key: CtKey) -> Result<Option<CtValue>> {
        let m: HashMap<_, CtKey, CtValue> = HashMap::try_from(self.map(names::CT)?)?;
        match m.get(&key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn ct_len(&mut self) -> Result<usize> {
        let m: HashMap<_, CtKey, CtValue> = HashMap::try_from(self.map(names::CT)?)?;
        Ok(m.keys().count())
    }

    pub fn frag(&mut self, key: FragKey) -> Result<Option<FragValue>> {
        let m: HashMap<_, FragKey, FragValue> = HashMap::try_from(self.map(names::FRAG)?)?;
        match m.get(&key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Packets counted under (reason, observation), summed over CPUs.
    pub fn metric(&mut self, reason: Reason, obs: u8) -> Result<MetricsValue> {
        let m: PerCpuArray<_, MetricsValue> = PerCpuArray::try_from(self.map(names::METRICS)?)?;
        let vals = m.get(&palisade_bpf::abi::metrics_index(reason, obs), 0)?;
        Ok(vals
            .iter()
            .fold(MetricsValue::default(), |a, v| MetricsValue {
                packets: a.packets + v.packets,
                bytes: a.bytes + v.bytes,
            }))
    }

    pub fn events_lost(&mut self) -> Result<u64> {
        let m: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map(names::COUNTERS)?)?;
        Ok(m.get(&COUNTER_EVENTS_LOST, 0)?.iter().sum())
    }

    /// Drains the ring buffer.
    pub fn events(&mut self) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            out.push(Event::from_bytes(&item)?);
        }
        Ok(out)
    }

    /// Runs `prog` on `packet` (starting at the Ethernet header) as if it
    /// arrived on interface `ifindex`, returning the TC verdict.
    ///
    /// BPF_PROG_TEST_RUN (net/bpf/test_run.c, bpf_prog_test_run_skb) takes
    /// the device from `__sk_buff.ifindex` of ctx_in: for ifindex > 1 it
    /// must name an existing interface in the caller's netns (else ENODEV),
    /// 0 or 1 mean loopback. The program then reads that ifindex as
    /// `skb->ifindex`.
    pub fn run(&mut self, prog: &str, ifindex: u32, packet: &[u8]) -> Result<u32> {
        self.run_marked(prog, ifindex, 0, packet)
    }

    /// [`Self::run`] with `skb->mark` set to `mark`.
    pub fn run_marked(
        &mut self,
        prog: &str,
        ifindex: u32,
        mark: u32,
        packet: &[u8],
    ) -> Result<u32> {
        let mut ctx = [0u8; SKB_CTX_SIZE];
        ctx[SKB_IFINDEX_OFF..SKB_IFINDEX_OFF + 4].copy_from_slice(&ifindex.to_ne_bytes());
        ctx[SKB_MARK_OFF..SKB_MARK_OFF + 4].copy_from_slice(&mark.to_ne_bytes());
        let p: &SchedClassifier = self
            .ebpf
            .program(prog)
            .or_else(|| self.overlay.program(prog))
            .ok_or_else(|| anyhow!("no program {prog}"))?
            .try_into()?;
        let mut out = vec![0u8; packet.len() + 256];
        let res = p
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::new()
            })
            .map_err(|e| anyhow!("BPF_PROG_TEST_RUN of {prog}: {e:?}"))?;
        Ok(res.return_value)
    }
}
