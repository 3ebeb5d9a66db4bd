//! Serde model of the supported resources, field for field as users write
//! them. Semantic checks live in [`crate::policy`]; this module only fixes
//! the shape. Every struct denies unknown fields; fields that palisade knows
//! but does not support are kept as raw YAML so that validation can reject
//! them with a precise "not supported" error instead of ignoring them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;

/// Opaque YAML, for fields palisade accepts without interpreting (Kubernetes
/// bookkeeping) or recognises only to reject.
pub type RawYaml = serde_yaml::Value;

/// Kubernetes object metadata (the common fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Object name.
    pub name: String,
    /// Namespace (namespaced kinds; defaults to `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Object labels (not policy labels).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Server-assigned UID.
    #[serde(default)]
    pub uid: Option<String>,
    /// Server-assigned resource version.
    #[serde(default)]
    pub resource_version: Option<String>,
    /// Generation counter.
    #[serde(default)]
    pub generation: Option<i64>,
    /// Creation time.
    #[serde(default)]
    pub creation_timestamp: Option<RawYaml>,
    /// Deletion time.
    #[serde(default)]
    pub deletion_timestamp: Option<RawYaml>,
    /// Deletion grace period.
    #[serde(default)]
    pub deletion_grace_period_seconds: Option<i64>,
    /// Name prefix for generated names.
    #[serde(default)]
    pub generate_name: Option<String>,
    /// Finalizers.
    #[serde(default)]
    pub finalizers: Option<Vec<String>>,
    /// Owner references.
    #[serde(default)]
    pub owner_references: Option<RawYaml>,
    /// Server-side apply bookkeeping.
    #[serde(default)]
    pub managed_fields: Option<RawYaml>,
    /// Self link (old API servers).
    #[serde(default)]
    pub self_link: Option<String>,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// `key: value` pairs, all required.
    #[serde(default)]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Set-based requirements, all required.
    #[serde(default)]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// One `matchExpressions` element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In`/`NotIn`.
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

/// A port written as a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A string (a named port, or a number in a CiliumNetworkPolicy).
    Str(String),
}

// ---------------------------------------------------------------- NetworkPolicy

/// `networking.k8s.io/v1` `NetworkPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    /// `networking.k8s.io/v1`.
    pub api_version: String,
    /// `NetworkPolicy`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The policy.
    #[serde(default)]
    pub spec: NetworkPolicySpec,
    /// Status written by a server; not interpreted.
    #[serde(default)]
    pub status: Option<RawYaml>,
}

/// `NetworkPolicy.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Pods the policy applies to (empty: every pod of the namespace).
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// `Ingress` and/or `Egress`.
    #[serde(default)]
    pub policy_types: Option<Vec<String>>,
    /// Ingress allow rules.
    #[serde(default)]
    pub ingress: Option<Vec<NetworkPolicyIngressRule>>,
    /// Egress allow rules.
    #[serde(default)]
    pub egress: Option<Vec<NetworkPolicyEgressRule>>,
}

/// One ingress rule of a NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyIngressRule {
    /// Peers (ORed); absent or empty: every peer.
    #[serde(default)]
    pub from: Option<Vec<NetworkPolicyPeer>>,
    /// Ports (ORed); absent or empty: every port.
    #[serde(default)]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

/// One egress rule of a NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyEgressRule {
    /// Peers (ORed); absent or empty: every peer.
    #[serde(default)]
    pub to: Option<Vec<NetworkPolicyPeer>>,
    /// Ports (ORed); absent or empty: every port.
    #[serde(default)]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

/// One `from`/`to` element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPeer {
    /// Pods (in the policy's namespace unless `namespaceSelector` is set).
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces.
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    /// Addresses outside the cluster.
    #[serde(default)]
    pub ip_block: Option<IpBlock>,
}

/// `ipBlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    /// The block.
    pub cidr: Cidr,
    /// Sub-blocks excluded from it.
    #[serde(default)]
    pub except: Option<Vec<Cidr>>,
}

/// One `ports` element of a NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Port number (a name is refused); absent: every port.
    #[serde(default)]
    pub port: Option<IntOrString>,
    /// Last port of an inclusive range starting at `port`.
    #[serde(default)]
    pub end_port: Option<i64>,
}

// ----------------------------------------------------------- CiliumNetworkPolicy

/// `cilium.io/v2` `CiliumNetworkPolicy` or `CiliumClusterwideNetworkPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumNetworkPolicy {
    /// `cilium.io/v2`.
    pub api_version: String,
    /// `CiliumNetworkPolicy` or `CiliumClusterwideNetworkPolicy`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// One rule.
    #[serde(default)]
    pub spec: Option<CiliumRule>,
    /// Several rules.
    #[serde(default)]
    pub specs: Option<Vec<CiliumRule>>,
    /// Status written by a server; not interpreted.
    #[serde(default)]
    pub status: Option<RawYaml>,
}

/// One Cilium rule (`spec`, or an element of `specs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumRule {
    /// Endpoints the rule applies to.
    #[serde(default)]
    pub endpoint_selector: Option<LabelSelector>,
    /// Nodes the rule applies to (host policies: not supported).
    #[serde(default)]
    pub node_selector: Option<RawYaml>,
    /// Ingress allow rules.
    #[serde(default)]
    pub ingress: Option<Vec<CiliumIngressRule>>,
    /// Ingress deny rules.
    #[serde(default)]
    pub ingress_deny: Option<Vec<CiliumIngressRule>>,
    /// Egress allow rules.
    #[serde(default)]
    pub egress: Option<Vec<CiliumEgressRule>>,
    /// Egress deny rules.
    #[serde(default)]
    pub egress_deny: Option<Vec<CiliumEgressRule>>,
    /// Whether selected endpoints go default-deny per direction.
    #[serde(default)]
    pub enable_default_deny: Option<DefaultDeny>,
    /// Free-text description.
    #[serde(default)]
    pub description: Option<String>,
    /// Rule labels (metadata; not interpreted).
    #[serde(default)]
    pub labels: Option<Vec<RawYaml>>,
    /// Policy logging (not supported).
    #[serde(default)]
    pub log: Option<RawYaml>,
}

/// `enableDefaultDeny`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultDeny {
    /// Ingress default deny (absent: true).
    #[serde(default)]
    pub ingress: Option<bool>,
    /// Egress default deny (absent: true).
    #[serde(default)]
    pub egress: Option<bool>,
}

/// `authentication` of an allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    /// `required`, `disabled` or `test-always-fail`.
    pub mode: String,
}

/// One ingress (or ingressDeny) rule of a Cilium policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumIngressRule {
    /// Source endpoints.
    #[serde(default)]
    pub from_endpoints: Option<Vec<LabelSelector>>,
    /// Source CIDRs.
    #[serde(default, rename = "fromCIDR")]
    pub from_cidr: Option<Vec<Cidr>>,
    /// Source CIDRs with exceptions.
    #[serde(default, rename = "fromCIDRSet")]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    /// Source entities.
    #[serde(default)]
    pub from_entities: Option<Vec<String>>,
    /// Ports.
    #[serde(default)]
    pub to_ports: Option<Vec<CiliumPortRule>>,
    /// Mutual authentication (allow rules only).
    #[serde(default)]
    pub authentication: Option<Authentication>,
    /// Not supported.
    #[serde(default)]
    pub from_requires: Option<RawYaml>,
    /// Not supported.
    #[serde(default)]
    pub from_nodes: Option<RawYaml>,
    /// Not supported.
    #[serde(default)]
    pub from_groups: Option<RawYaml>,
    /// Not supported.
    #[serde(default)]
    pub icmps: Option<RawYaml>,
}

/// One egress (or egressDeny) rule of a Cilium policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumEgressRule {
    /// Destination endpoints.
    #[serde(default)]
    pub to_endpoints: Option<Vec<LabelSelector>>,
    /// Destination CIDRs.
    #[serde(default, rename = "toCIDR")]
    pub to_cidr: Option<Vec<Cidr>>,
    /// Destination CIDRs with exceptions.
    #[serde(default, rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    /// Destination entities.
    #[serde(default)]
    pub to_entities: Option<Vec<String>>,
    /// Ports.
    #[serde(default)]
    pub to_ports: Option<Vec<CiliumPortRule>>,
    /// Mutual authentication (allow rules only).
    #[serde(default)]
    pub authentication: Option<Authentication>,
    /// Not supported.
    #[serde(default)]
    pub to_requires: Option<RawYaml>,
    /// Not supported.
    #[serde(default, rename = "toFQDNs")]
    pub to_fqdns: Option<RawYaml>,
    /// Not supported.
    #[serde(default)]
    pub to_services: Option<RawYaml>,
    /// Not supported.
    #[serde(default)]
    pub to_nodes: Option<RawYaml>,
    /// Not supported.
    #[serde(default)]
    pub to_groups: Option<RawYaml>,
    /// Not supported.
    #[serde(default)]
    pub icmps: Option<RawYaml>,
}

/// One `fromCIDRSet`/`toCIDRSet` element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrRule {
    /// The block.
    #[serde(default)]
    pub cidr: Option<Cidr>,
    /// Sub-blocks excluded from it.
    #[serde(default)]
    pub except: Option<Vec<Cidr>>,
    /// Not supported.
    #[serde(default)]
    pub cidr_group_ref: Option<RawYaml>,
    /// Not supported.
    #[serde(default)]
    pub cidr_group_selector: Option<RawYaml>,
}

/// One `toPorts` element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumPortRule {
    /// Ports (ORed).
    #[serde(default)]
    pub ports: Option<Vec<CiliumPort>>,
    /// L7 rules (not supported).
    #[serde(default)]
    pub rules: Option<RawYaml>,
    /// TLS SNI (not supported).
    #[serde(default)]
    pub server_names: Option<RawYaml>,
    /// L7 listener (not supported).
    #[serde(default)]
    pub listener: Option<RawYaml>,
    /// TLS origination (not supported).
    #[serde(default, rename = "originatingTLS")]
    pub originating_tls: Option<RawYaml>,
    /// TLS termination (not supported).
    #[serde(default, rename = "terminatingTLS")]
    pub terminating_tls: Option<RawYaml>,
}

/// One `toPorts[].ports` element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumPort {
    /// Port as a string (`"80"`; `"0"` means every port).
    #[serde(default)]
    pub port: Option<IntOrString>,
    /// Last port of an inclusive range.
    #[serde(default)]
    pub end_port: Option<i64>,
    /// `TCP`, `UDP`, `SCTP` or `ANY` (default).
    #[serde(default)]
    pub protocol: Option<String>,
}

// -------------------------------------------------------------------- Namespace

/// `v1` `Namespace` (its labels feed namespace selectors in standalone mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    /// `v1`.
    pub api_version: String,
    /// `Namespace`.
    pub kind: String,
    /// Metadata; `labels` are the namespace labels.
    pub metadata: ObjectMeta,
    /// Not interpreted.
    #[serde(default)]
    pub spec: Option<RawYaml>,
    /// Not interpreted.
    #[serde(default)]
    pub status: Option<RawYaml>,
}
