/*
 * Every map of the datapath, in one place. Names are part of the ABI: the
 * agent opens them by name and pins them under its bpf root
 * (LIBBPF_PIN_BY_NAME), so that a restarted agent reuses the maps, and the
 * programs keep enforcing while no agent runs.
 */
#ifndef PALISADE_LIB_MAPS_H
#define PALISADE_LIB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi/auth.h"
#include "abi/conntrack.h"
#include "abi/endpoint.h"
#include "abi/event.h"
#include "abi/ipcache.h"
#include "abi/policy.h"
#include "abi/reasons.h"
#include "abi/state.h"
#include "abi/tunnel.h"

#define PAL_MAX_ENDPOINTS 65536
#define PAL_MAX_IPCACHE 524288
#define PAL_MAX_POLICY 1048576
#define PAL_MAX_CT 262144
#define PAL_MAX_FRAGS 8192
#define PAL_MAX_TUNNEL 16384
#define PAL_MAX_AUTH 65536
#define PAL_EVENTS_BYTES (4 << 20)

/* Indexes of pal_counters. */
#define PAL_COUNTER_EVENTS_LOST 0
#define PAL_COUNTER_MAX 8

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct pal_endpoint_key);
	__type(value, struct pal_endpoint_info);
	__uint(max_entries, PAL_MAX_ENDPOINTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct pal_ipcache_key);
	__type(value, struct pal_ipcache_value);
	__uint(max_entries, PAL_MAX_IPCACHE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct pal_policy_key);
	__type(value, struct pal_policy_value);
	__uint(max_entries, PAL_MAX_POLICY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_policy SEC(".maps");

/* Other nodes' pod CIDRs and addresses -> their underlay address (abi/tunnel.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct pal_ipcache_key);
	__type(value, struct pal_tunnel_value);
	__uint(max_entries, PAL_MAX_TUNNEL);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_tunnel SEC(".maps");

/* Authenticated identity pairs (abi/auth.h); written only by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct pal_auth_key);
	__type(value, struct pal_auth_value);
	__uint(max_entries, PAL_MAX_AUTH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_auth SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct pal_ct_key);
	__type(value, struct pal_ct_value);
	__uint(max_entries, PAL_MAX_CT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct pal_frag_key);
	__type(value, struct pal_frag_value);
	__uint(max_entries, PAL_MAX_FRAGS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_frag SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_state);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PAL_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_events SEC(".maps");

/* Per reason and observation point: index = -reason * PAL_OBS_MAX + observation. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct pal_metrics_value);
	__uint(max_entries, PAL_REASON_MAX * PAL_OBS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, PAL_COUNTER_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pal_counters SEC(".maps");

#endif
