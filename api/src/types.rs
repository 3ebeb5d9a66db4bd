//! Request and response types of the local API.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A request to the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Agent health, counters and datapath state.
    Status,
    /// Validate, compile for this kernel and apply a YAML stream of
    /// TracingPolicy documents (all or nothing).
    TracingPolicyApply {
        /// Name for error messages (a file name or "-").
        source: String,
        /// The YAML stream.
        yaml: String,
    },
    /// Validate and compile for this kernel without applying.
    TracingPolicyValidate {
        /// Name for error messages.
        source: String,
        /// The YAML stream.
        yaml: String,
    },
    /// Every tracing policy in force.
    TracingPolicyList,
    /// Remove a tracing policy applied through the API.
    TracingPolicyDelete {
        /// `metadata.name`.
        name: String,
    },
    /// Runtime events (Tetragon JSON lines): the recent ones, then, with
    /// `follow`, every new one.
    RuntimeEvents {
        /// Keep streaming.
        follow: bool,
        /// How many recent events first.
        limit: usize,
    },
    /// Reserve an address for a container interface (idempotent per
    /// container id and interface name).
    IpamAllocate {
        /// The container runtime's id of the container.
        container_id: String,
        /// The interface name inside the container.
        ifname: String,
    },
    /// Give back an address reserved by [`Request::IpamAllocate`] (idempotent).
    IpamRelease {
        /// The container runtime's id of the container.
        container_id: String,
        /// The interface name inside the container.
        ifname: String,
    },
    /// Register an endpoint whose interfaces exist: attach the datapath to
    /// its host-side interface and enforce policy for it.
    EndpointAdd(EndpointAddRequest),
    /// Forget an endpoint, detach the datapath and release its address
    /// (idempotent: unknown endpoints are not an error).
    EndpointDel {
        /// The container runtime's id of the container.
        container_id: String,
        /// The interface name inside the container.
        ifname: String,
    },
    /// One endpoint, by container id and interface name.
    EndpointGet {
        /// The container runtime's id of the container.
        container_id: String,
        /// The interface name inside the container.
        ifname: String,
    },
    /// Every endpoint.
    EndpointList,
    /// Switch policy audit mode of one endpoint (would-be drops are
    /// reported as audit events and pass).
    EndpointSetAudit {
        /// The endpoint.
        ep_id: u16,
        /// On or off.
        audit: bool,
    },
    /// Every security identity in use.
    IdentityList,
    /// The SPIFFE CA: its generations and trust bundle.
    IdentityCaShow,
    /// Start a CA rotation: a new generation joins the bundle and signs
    /// after the propagation delay (or at once with `immediately`).
    IdentityCaRotate {
        /// Activate the new CA at once instead of after the propagation delay.
        immediately: bool,
    },
    /// Create a single-use join token for a node (on the node serving the
    /// node CA).
    IdentityTokenCreate {
        /// The node the token admits.
        node: String,
        /// How long the token is valid, in seconds.
        ttl_secs: u64,
    },
    /// The nodes and join tokens the node CA knows.
    IdentityNodeList,
    /// Revoke a node: the node CA refuses it until it joins again.
    IdentityNodeRevoke {
        /// The node.
        node: String,
    },
    /// Every SVID this node holds.
    SvidList,
    /// One SVID, with its certificate chain.
    SvidInspect {
        /// Its SPIFFE ID.
        spiffe_id: String,
    },
    /// This node and every other node it knows.
    NodeList,
    /// The cluster store: health, sync state, last error.
    ClusterStatus,
    /// Mutual authentication: every pair this node authenticated or needs,
    /// and the handshake counters.
    AuthList,
    /// Every policy in force, with its source.
    PolicyList,
    /// Validate and apply a YAML stream of policies and namespaces. Nothing
    /// is applied unless every document is valid.
    PolicyApply {
        /// Name for error messages and `policy list` (a file name or "-").
        source: String,
        /// The YAML stream.
        yaml: String,
    },
    /// Remove policies applied through the API.
    PolicyDelete {
        /// Kind (NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy).
        kind: String,
        /// Namespace, for namespaced kinds.
        namespace: Option<String>,
        /// Name.
        name: String,
    },
    /// Recent flow events, and with `follow` every new one as it comes.
    Flows {
        /// Keep the connection open and stream new events.
        follow: bool,
        /// Only events with a sequence number above this.
        since_seq: Option<u64>,
        /// At most this many of the recent events (newest last).
        limit: Option<usize>,
        /// Only these kinds of events; empty = all.
        #[serde(default)]
        kinds: Vec<FlowKind>,
    },
}

/// Everything the agent needs to know to enforce policy for an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointAddRequest {
    /// The container runtime's id of the container.
    pub container_id: String,
    /// The interface name inside the container (`CNI_IFNAME`).
    pub ifname: String,
    /// Path of the container's network namespace (`CNI_NETNS`).
    pub netns: String,
    /// Name of the host side of the veth pair.
    pub host_ifname: String,
    /// The endpoint's address (from [`Request::IpamAllocate`]).
    pub ipv4: Ipv4Addr,
    /// Kubernetes namespace of the pod.
    pub pod_namespace: String,
    /// Kubernetes name of the pod.
    pub pod_name: String,
    /// The pod's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The pod's service account ("default" when absent).
    #[serde(default)]
    pub service_account: Option<String>,
}

/// The answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The request failed; `message` says why.
    Error {
        /// What went wrong and what would fix it.
        message: String,
    },
    /// The request succeeded and has nothing to return.
    Done,
    /// See [`Request::Status`].
    Status(Box<AgentStatus>),
    /// See [`Request::IpamAllocate`].
    Address(IpamAddress),
    /// One endpoint.
    Endpoint(Box<EndpointRecord>),
    /// See [`Request::EndpointList`].
    Endpoints {
        /// Every endpoint, by id.
        endpoints: Vec<EndpointRecord>,
    },
    /// See [`Request::IdentityList`].
    Identities {
        /// Every identity, by number.
        identities: Vec<IdentityRecord>,
    },
    /// See [`Request::NodeList`].
    Nodes {
        /// Every node, by name.
        nodes: Vec<NodeInfo>,
    },
    /// See [`Request::ClusterStatus`].
    Cluster(Box<ClusterStatus>),
    /// See [`Request::PolicyList`].
    Policies {
        /// Every policy in force.
        policies: Vec<PolicyRecord>,
    },
    /// See [`Request::PolicyApply`].
    Applied {
        /// What the apply changed.
        summary: ApplySummary,
    },
    /// One flow event (see [`Request::Flows`]).
    Flow(Box<FlowRecord>),
    /// Tracing policies in force.
    TracingPolicies {
        /// The policies.
        policies: Vec<TracingPolicyRecord>,
    },
    /// One runtime event, a Tetragon JSON line.
    RuntimeEvent {
        /// The JSON.
        json: String,
    },
    /// See [`Request::IdentityCaShow`] and [`Request::IdentityCaRotate`].
    IdentityCa(Box<CaStatus>),
    /// See [`Request::IdentityTokenCreate`].
    JoinToken {
        /// The token (shown once; the CA keeps only its hash).
        token: String,
        /// Its public id.
        id: String,
        /// The node it admits.
        node: String,
        /// When it expires (Unix seconds).
        expires: u64,
    },
    /// See [`Request::IdentityNodeList`].
    CaNodes {
        /// Admitted and revoked nodes.
        nodes: Vec<CaNodeRecord>,
        /// Join tokens, outstanding and recently spent (never the secret).
        tokens: Vec<JoinTokenRecord>,
    },
    /// See [`Request::SvidList`].
    Svids {
        /// Every SVID held, by SPIFFE ID.
        svids: Vec<SvidRecord>,
    },
    /// See [`Request::AuthList`].
    Auth(Box<AuthReport>),
    /// See [`Request::SvidInspect`].
    Svid {
        /// The SVID.
        svid: Box<SvidRecord>,
        /// Its certificate chain, leaf first (PEM; never the key).
        chain_pem: String,
    },
}

/// The SPIFFE CA of the trust domain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaStatus {
    /// The trust domain.
    pub trust_domain: String,
    /// Every CA generation still in the bundle, oldest first.
    pub generations: Vec<CaGenerationRecord>,
    /// The X.509 trust bundle (PEM).
    pub bundle_pem: String,
    /// How many SVIDs the node holds.
    pub svids_held: usize,
    /// The Workload API socket.
    pub workload_api_socket: String,
    /// The node CA: served here, or used at an address.
    #[serde(default)]
    pub node_ca: Option<String>,
}

/// A node the node CA knows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaNodeRecord {
    /// Its name.
    pub name: String,
    /// When it last joined (Unix seconds).
    pub joined: u64,
    /// When it was revoked (Unix seconds).
    pub revoked: Option<u64>,
}

/// A join token, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinTokenRecord {
    /// Its public id.
    pub id: String,
    /// The node it admits.
    pub node: String,
    /// When it expires (Unix seconds).
    pub expires: u64,
    /// When it was used (Unix seconds).
    pub used: Option<u64>,
}

/// One CA generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaGenerationRecord {
    /// Its number.
    pub number: u64,
    /// `prepared`, `active` or `retired`.
    pub stage: String,
    /// The CA certificate's subject key identifier (hex).
    pub key_id: String,
    /// The key id (`kid`) of its JWT signing key.
    pub jwt_key_id: String,
    /// Whether the CA certificate is its own trust anchor.
    pub self_signed: bool,
    /// Validity start (unix seconds).
    pub not_before: u64,
    /// Validity end (unix seconds).
    pub not_after: u64,
    /// A prepared generation signs from then on (unix seconds).
    pub activate_after: Option<u64>,
    /// When it retired (unix seconds).
    pub retired_at: Option<u64>,
    /// A retired generation leaves the bundle then (unix seconds).
    pub dropped_after: Option<u64>,
}

/// An SVID the node holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SvidRecord {
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// `workload` (`/ns/<ns>/sa/<sa>`) or `identity` (`/identity/<n>`).
    pub kind: String,
    /// The endpoints it is for.
    pub endpoints: Vec<u16>,
    /// Validity start (unix seconds).
    pub not_before: u64,
    /// Validity end (unix seconds).
    pub not_after: u64,
    /// When it is renewed (unix seconds).
    pub renew_at: u64,
    /// The CA generation that signed it.
    pub ca_generation: u64,
}

/// Mutual authentication on this node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthReport {
    /// Whether the auth manager runs (see `auth.enabled`), and why not.
    pub enabled: bool,
    /// Why authentication does not run, when it does not.
    pub disabled_reason: Option<String>,
    /// Where this node's agent accepts handshakes.
    pub listen: Option<String>,
    /// Every pair, by local identity, remote identity, node, type.
    pub pairs: Vec<AuthRecord>,
    /// Counters.
    pub stats: AuthStats,
}

/// One authenticated (or wanted) pair of identities, from this node's side.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthRecord {
    /// Identity of the endpoint on this node.
    pub local_identity: u32,
    /// Identity of its peer.
    pub remote_identity: u32,
    /// The local identity's labels, short (`shop app=db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_labels: Option<String>,
    /// The remote identity's labels, short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_labels: Option<String>,
    /// The peer's node: its name, or `local` for this node.
    pub remote_node: String,
    /// The peer node's underlay address (none for this node).
    pub remote_node_address: Option<String>,
    /// `spiffe` or `test-always-fail`.
    pub auth_type: String,
    /// `authenticated`, `pending` (wanted, not yet), `failing` or `expired`.
    pub state: String,
    /// Whether this node's policy requires the pair now.
    pub needed: bool,
    /// Who ran the last handshake: `client` (this node dialled), `server`
    /// (the peer dialled), `restored` (from the pinned map after a restart).
    pub origin: String,
    /// When the authentication expires (Unix seconds).
    pub expires: Option<u64>,
    /// When the last successful handshake finished (Unix seconds).
    pub last_handshake: Option<u64>,
    /// The SPIFFE ID the peer presented in it.
    pub peer_spiffe_id: Option<String>,
    /// Failed handshakes since the last success.
    pub failures: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (Unix seconds), while failing.
    pub next_attempt: Option<u64>,
}

/// Handshake counters since the agent started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuthStats {
    /// Handshakes this node ran as a client that succeeded.
    pub handshakes: u64,
    /// Handshakes this node ran as a client that failed, by kind
    /// (`connect`, `timeout`, `untrusted`, `expired`, `wrong-identity`, ...).
    pub failures: BTreeMap<String, u64>,
    /// Handshakes other nodes ran with this node that succeeded.
    pub accepted: u64,
    /// Handshakes other nodes ran with this node that failed, by kind.
    pub refused: BTreeMap<String, u64>,
    /// Signals from the datapath (drops for missing authentication).
    pub signals: u64,
    /// Client handshake latency, connect included: median, milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Entries in the datapath's auth map.
    pub map_entries: usize,
}

/// A tracing policy in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TracingPolicyRecord {
    /// `metadata.name`.
    pub name: String,
    /// Where it came from (file, `api:<source>`).
    pub source: String,
    /// `enforce` or `monitor`.
    pub mode: String,
    /// Each hook: its YAML path and the mechanism running it.
    pub hooks: Vec<String>,
    /// Caveats (monitoring fallback, ...).
    pub warnings: Vec<String>,
}

/// Runtime enforcement state in `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuntimeStatus {
    /// Tracing policies in force.
    pub policies: usize,
    /// Processes in the agent's cache.
    pub processes: usize,
    /// Processes evicted from the cache (its size is bounded).
    pub process_evictions: u64,
    /// Events delivered to the log and followers.
    pub events_delivered: u64,
    /// Every loss, in one place: ring buffer full (kernel).
    pub lost_ringbuf_full: u64,
    /// Records that could not be decoded.
    pub lost_undecodable: u64,
    /// Events slow followers missed.
    pub lost_follower_lagged: u64,
    /// Events that could not be written to the event log.
    pub lost_log_write: u64,
    /// Events suppressed by rateLimit (by design, not loss).
    pub rate_limited: u64,
    /// Signals that could not be sent.
    pub signal_failed: u64,
    /// File opens and execs checked in user space (fanotify hooks).
    #[serde(default)]
    pub file_accesses_checked: u64,
    /// Of those, denied (`Override` through fanotify).
    #[serde(default)]
    pub file_accesses_denied: u64,
    /// Of those, answered by the fail mode (path unreadable, evaluation
    /// failed).
    #[serde(default)]
    pub file_checks_failed: u64,
    /// Events lost by fanotify's own queue overflowing.
    #[serde(default)]
    pub lost_fanotify_overflow: u64,
    /// Fanotify-hook events lost because the agent's queue was full.
    #[serde(default)]
    pub lost_fanotify_queue: u64,
    /// Hook runs in the kernel that evaluated selectors.
    #[serde(default)]
    pub hook_runs: u64,
    /// Hook runs the head prefilter of syscall hooks spared (the string
    /// argument began with no value's head).
    #[serde(default)]
    pub head_prefilter_skips: u64,
    /// Runs of `raw_syscalls` hooks the syscall-id prefilter spared (a
    /// syscall no selector admits).
    #[serde(default)]
    pub id_prefilter_skips: u64,
}

/// An address reserved for an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamAddress {
    /// The endpoint's address.
    pub ipv4: Ipv4Addr,
    /// Prefix length of the node's pod CIDR.
    pub prefix_len: u8,
    /// The gateway the endpoint routes through (link-local, answered by
    /// proxy ARP on the host side of the veth).
    pub gateway: Ipv4Addr,
    /// The largest MTU the node can carry for pods (in a cluster, the
    /// overlay's); `None` when only the interface default limits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// An endpoint as the agent knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRecord {
    /// Endpoint id (key of its policy entries).
    pub ep_id: u16,
    /// The request it was registered with.
    pub spec: EndpointAddRequest,
    /// Host-side interface index.
    pub host_ifindex: u32,
    /// Security identity.
    pub identity: u32,
    /// Whether ingress policy is enforced (some policy selects it).
    pub ingress_enforced: bool,
    /// Whether egress policy is enforced.
    pub egress_enforced: bool,
    /// Policy audit mode.
    pub audit: bool,
    /// Policies that select this endpoint.
    pub policies: Vec<String>,
    /// Number of policy-map entries of this endpoint.
    pub policy_entries: usize,
}

/// A security identity in use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityRecord {
    /// The number.
    pub id: u32,
    /// Its labels (`key=value`), or the reserved name / CIDR it stands for.
    pub labels: Vec<String>,
    /// Where it comes from: `reserved`, `cluster` or `cidr`.
    pub scope: String,
    /// Endpoints on this node holding it.
    pub endpoints: u32,
}

/// A policy in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyRecord {
    /// Kind.
    pub kind: String,
    /// Namespace (none for cluster-wide kinds).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Where it came from: a file of the policy directory, or `api:<source>`.
    pub source: String,
    /// Endpoints on this node it selects.
    pub selected_endpoints: usize,
}

/// What a [`Request::PolicyApply`] changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApplySummary {
    /// Policies created or changed.
    pub policies: Vec<String>,
    /// Namespaces whose labels were set.
    pub namespaces: Vec<String>,
    /// Policy-map entries written.
    pub entries_upserted: usize,
    /// Policy-map entries removed.
    pub entries_deleted: usize,
    /// Warnings (accepted, but not everything can be enforced as written).
    pub warnings: Vec<String>,
}

/// Agent status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Agent version.
    pub version: String,
    /// Node name.
    pub node_name: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// The node's pod CIDR.
    pub pod_cidr: String,
    /// Where programs and maps are pinned.
    pub bpf_root: String,
    /// Whether the datapath was found pinned from an earlier run at start.
    pub restored_from_pins: bool,
    /// Endpoints.
    pub endpoints: usize,
    /// Identities in use.
    pub identities: usize,
    /// Policies in force.
    pub policies: usize,
    /// Current policy revision of the datapath.
    pub policy_revision: u32,
    /// Policy-map entries in total.
    pub policy_entries: usize,
    /// Connection-tracking entries.
    pub conntrack_entries: usize,
    /// Packets and bytes per verdict reason and observation point.
    pub verdicts: Vec<VerdictCounter>,
    /// Events lost in the kernel (ring buffer full).
    pub events_lost: u64,
    /// Last error of the policy directory watch, if the last load failed.
    pub policy_dir_error: Option<String>,
    /// The mechanism chosen for each feature.
    pub mechanisms: Vec<Mechanism>,
    /// Runtime enforcement, when running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStatus>,
    /// Mutual authentication, when running: authenticated pairs and the
    /// handshake counters (`palisade auth list` has every pair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSummary>,
}

/// Mutual authentication in `palisade status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuthSummary {
    /// Pairs authenticated now.
    pub authenticated: usize,
    /// Pairs wanted but not authenticated (pending or failing).
    pub unauthenticated: usize,
    /// The counters.
    pub stats: AuthStats,
}

/// A per-reason counter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerdictCounter {
    /// Reason name (`forwarded`, `policy_denied`, ...).
    pub reason: String,
    /// Reason code.
    pub code: i32,
    /// `from-endpoint` or `to-endpoint`.
    pub observation: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A feature and the kernel mechanism chosen for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mechanism {
    /// The feature (`network policy`, `flow events`, ...).
    pub feature: String,
    /// The mechanism, or why none is available.
    pub mechanism: String,
    /// Whether the feature works on this kernel.
    pub available: bool,
}

/// Kind of a flow event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// A new connection was admitted.
    Flow,
    /// A packet was dropped.
    Drop,
    /// Policy would have dropped it; the endpoint is in audit mode.
    Audit,
}

/// One side of a flow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowPeer {
    /// Address.
    pub ip: Ipv4Addr,
    /// Port (ICMP: echo identifier or 0).
    pub port: u16,
    /// Security identity.
    pub identity: u32,
    /// `namespace/pod` when the address is a local endpoint, or the reserved
    /// identity's name.
    pub name: Option<String>,
}

/// A flow event as the agent reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowRecord {
    /// Sequence number, increasing.
    pub seq: u64,
    /// Wall-clock time, RFC 3339.
    pub time: String,
    /// Kind.
    pub kind: FlowKind,
    /// Reason name (`forwarded` for admitted flows).
    pub reason: String,
    /// Reason code.
    pub reason_code: i32,
    /// `egress` (leaving the endpoint) or `ingress` (entering it).
    pub direction: String,
    /// Protocol name (`tcp`, `udp`, `icmp`, `sctp`) or number.
    pub protocol: String,
    /// Ethernet type of the packet (0x0800 for IPv4).
    #[serde(default)]
    pub ethertype: u16,
    /// Source.
    pub src: FlowPeer,
    /// Destination.
    pub dst: FlowPeer,
    /// The endpoint at which it was observed.
    pub ep_id: u16,
    /// The policy rule that decided, if any (`kind ns/name ingress[0]`).
    pub rule: Option<String>,
    /// The mutual authentication the rule requires (`spiffe`,
    /// `test-always-fail`): on an admitted flow, it was authenticated; on a
    /// drop or audit event with reason `authentication required`, it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// With `auth`: the node of the peer whose identity needed
    /// authenticating (its underlay address, `unknown` when no known node
    /// hosts it; none for this node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_node: Option<String>,
}

/// A node of the cluster (`palisade node list`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Its underlay address (empty for a node alone).
    pub address: String,
    /// Its pod CIDR.
    pub pod_cidr: String,
    /// Its endpoints, as this node knows them.
    pub endpoints: usize,
    /// Whether it is the node that answered.
    pub local: bool,
}

/// The cluster store as one node sees it (`palisade cluster status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    /// `local` (a node alone) or `etcd`.
    pub store: String,
    /// The node that answered.
    pub node_name: String,
    /// Its pod CIDR.
    pub pod_cidr: String,
    /// etcd client URLs.
    pub etcd_endpoints: Vec<String>,
    /// Whether the last request to etcd succeeded.
    pub connected: bool,
    /// The node's lease.
    pub lease_id: Option<i64>,
    /// etcd revision the node's view reflects.
    pub synced_revision: i64,
    /// Full listings of the cluster (one at start, one after every
    /// disconnect).
    pub resyncs: u64,
    /// The last error.
    pub last_error: Option<String>,
    /// When it happened (seconds since the Unix epoch).
    pub last_error_unix: Option<u64>,
    /// Writes waiting for etcd.
    pub pending_writes: usize,
    /// Records of other nodes skipped because they did not parse.
    pub malformed_records: u64,
    /// Nodes known (this one included).
    pub nodes: usize,
    /// Endpoints known (this node's included).
    pub endpoints: usize,
    /// Identities known.
    pub identities: usize,
    /// Identities this node garbage-collected.
    pub identities_collected: u64,
    /// The overlay toward the other nodes, in a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayStatus>,
}

/// The overlay device and what it routes (`palisade cluster status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OverlayStatus {
    /// The device (`palisade_vxlan`).
    pub device: String,
    /// Its UDP port.
    pub port: u16,
    /// Its MTU, which pods get too.
    pub mtu: u32,
    /// Nodes whose pods are routed through it.
    pub routed_nodes: usize,
    /// Nodes left out, with why (`name: reason`).
    pub skipped_nodes: Vec<String>,
}
