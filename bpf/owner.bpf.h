/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The owner of a socket: the process that created, connected, listened on,
 * closed, or last sent or received on it in process context (issue 14).
 *
 * Why: receive-side refusals, timer-path orphan kills and TIME_WAIT overflows
 * run in softirq or a timer, where `current` is whatever task was interrupted
 * (swapper, ksoftirqd, or on loopback the *sender*). The owner is noted at
 * process-context hooks and read back at every event, so an event names the
 * process and cgroup that use the socket, and the context task stays as well.
 *
 * Two stores, one interface:
 * - bpf_sk_storage (tracing programs may use it from 5.11) on tp_btf/fentry
 *   programs: lives and dies with the socket, survives orphaning (the sock
 *   outlives its struct socket), and BPF_F_CLONE copies a listener's owner to
 *   the sockets it accepts, so an accepted socket is named before its first
 *   read;
 * - a hash map keyed by the socket's address elsewhere (raw_tp, kprobe, and
 *   tp_btf before 5.11), cleared at tcp:tcp_destroy_sock (4.16+) so a reused
 *   slab address never inherits an owner; LRU so a missed destroy cannot fill
 *   it.
 * `owner_storage` (set by the loader from the plan) picks the store; the
 * branch on it is constant, and the verifier skips the store not taken.
 * Callers pass `btf`: true only where sk is a BTF pointer (tp_btf, fentry),
 * a compile-time constant once inlined, so raw_tp/kprobe programs never
 * contain the sk_storage call at all.
 *
 * Also on every event, whatever the tier: sk_uid, the socket's cgroup v2 id
 * (sk_cgrp_data, set at socket creation from the creator's cgroup) and its
 * memory cgroup's id (sk_memcg: on hybrid hosts the v1 memory cgroup).
 */
#ifndef __TCPOOM_OWNER_BPF_H
#define __TCPOOM_OWNER_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "tcpoom.h"

#define METHOD_BTF(m) ((m) == METHOD_FENTRY || (m) == METHOD_TP_BTF)

/* 1: bpf_sk_storage on BTF programs; 0: the hash map everywhere */
const volatile __u32 owner_storage = 0;
/* 1: the memory controller is a v1 hierarchy (socket memory in memcg->tcpmem) */
const volatile __u32 memcg_v1 = 0;
/* 1: the TIME_WAIT inference's inet_sock_set_state program (set_state_btf or
 * set_state_raw) notes the owner too, and owner_state_* is not loaded: one
 * program run per state change instead of two (the loader sets it when both
 * are planned with the same kind; tracer/kernel/loader.py). */
const volatile __u8 owner_at_set_state = 0;

struct owner {
	__u64 cgroup;		/* cgroup v2 id of the task when it was noted */
	__u32 tgid;
	__u32 uid;
	char comm[TCPOOM_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct owner);
} owner_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);		/* the socket's address */
	__type(value, struct owner);
} owner_by_sk SEC(".maps");

/* Before 5.15 sock_cgroup_data was a u64: a cgroup pointer, or (low bit set)
 * net_prio/net_cls data, when those v1 controllers were used (then the v2 id
 * is not kept at all). 5.15 split it into a pointer and the v1 data. */
struct sock_cgroup_data___old {
	__u64 val;
} __attribute__((preserve_access_index));

/* Before 5.5 a kernfs id was a union of ino and generation; the directory's
 * inode number, which is what user space sees, is `ino`. */
union kernfs_node_id___old {
	struct {
		__u32 ino;
		__u32 generation;
	};
	__u64 id;
} __attribute__((preserve_access_index));

struct kernfs_node___old {
	union kernfs_node_id___old id;
} __attribute__((preserve_access_index));

static __always_inline __u64 kn_id(struct kernfs_node *kn)
{
	if (!kn)
		return 0;
	if (bpf_core_type_exists(union kernfs_node_id___old))
		return BPF_CORE_READ((struct kernfs_node___old *)kn, id.ino);
	return BPF_CORE_READ(kn, id);
}

static __always_inline __u64 sk_cgroup_id(const struct sock *sk)
{
	struct cgroup *cg;

	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup)) {
		cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	} else {
		__u64 val = BPF_CORE_READ((struct sock_cgroup_data___old *)&sk->sk_cgrp_data, val);

		if (val & 1)
			return 0;
		cg = (struct cgroup *)val;
	}
	return cg ? kn_id(BPF_CORE_READ(cg, kn)) : 0;
}

static __always_inline struct mem_cgroup *sk_memcg_of(const struct sock *sk)
{
	if (!bpf_core_field_exists(sk->sk_memcg))
		return NULL;
	return BPF_CORE_READ(sk, sk_memcg);
}

static __always_inline void note_owner_in(struct owner *o)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (o->tgid == id >> 32)
		return;			/* same owner: the common case costs one compare */
	o->tgid = id >> 32;
	o->uid = (__u32)bpf_get_current_uid_gid();
	o->cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

/* Note the current task as the socket's owner; call only in process context. */
static __always_inline void note_owner(const struct sock *sk, bool btf)
{
	struct owner *o, fresh = {};
	__u64 key = (__u64)sk;

	if (btf && owner_storage) {
		o = bpf_sk_storage_get(&owner_sk, (void *)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (o)
			note_owner_in(o);
		return;
	}
	o = bpf_map_lookup_elem(&owner_by_sk, &key);
	if (o) {
		note_owner_in(o);
		return;
	}
	note_owner_in(&fresh);
	bpf_map_update_elem(&owner_by_sk, &key, &fresh, BPF_ANY);
}

static __always_inline void forget_owner(const struct sock *sk, bool btf)
{
	__u64 key = (__u64)sk;

	if (btf && owner_storage)
		return;			/* sk_storage goes with the socket */
	bpf_map_delete_elem(&owner_by_sk, &key);
}

/* --pid: the owner's tgid where one was noted, else the context's. No `btf`
 * guard here: owner_storage is 1 only when every loaded program that calls
 * this gets a BTF socket pointer (tracer/kernel/plan/owner.py owner_plan), and the
 * verifier skips the branch a frozen .rodata value rules out. */
static __always_inline __u32 owner_tgid(const struct sock *sk)
{
	struct owner *o = NULL;
	__u64 key = (__u64)sk;

	if (sk) {
		if (owner_storage)
			o = bpf_sk_storage_get(&owner_sk, (void *)sk, 0, 0);
		else
			o = bpf_map_lookup_elem(&owner_by_sk, &key);
	}
	if (o && o->tgid)
		return o->tgid;
	return bpf_get_current_pid_tgid() >> 32;
}

/* The owner, the socket's cgroups and sk_uid into an event. With no owner
 * noted (a socket older than tcpoom, or not used in process context since),
 * the context task stands in, marked context-only. */
static __always_inline void fill_owner(struct tcpoom_event *e, const struct sock *sk, bool btf)
{
	struct owner *o = NULL;
	__u64 key = (__u64)sk;

	e->cgroup = bpf_get_current_cgroup_id();
	if (!sk)
		goto context;
	e->sk_cgroup = sk_cgroup_id(sk);
	e->memcg = 0;
	{
		struct mem_cgroup *memcg = sk_memcg_of(sk);

		if (memcg)
			e->memcg = kn_id(BPF_CORE_READ(memcg, css.cgroup, kn));
	}
	e->sk_uid = BPF_CORE_READ(sk, sk_uid.val);
	if (btf && owner_storage)
		o = bpf_sk_storage_get(&owner_sk, (void *)sk, 0, 0);
	else
		o = bpf_map_lookup_elem(&owner_by_sk, &key);
	if (o && o->tgid) {
		e->owner_pid = o->tgid;
		e->owner_uid = o->uid;
		e->owner_cgroup = o->cgroup;
		__builtin_memcpy(e->owner_comm, o->comm, sizeof(e->owner_comm));
		e->owner_fidelity = o->tgid == e->pid ? OWNER_EXACT : OWNER_LAST_KNOWN;
		return;
	}
context:
	e->owner_pid = e->pid;
	e->owner_uid = (__u32)bpf_get_current_uid_gid();
	e->owner_cgroup = e->cgroup;
	__builtin_memcpy(e->owner_comm, e->comm, sizeof(e->owner_comm));
	e->owner_fidelity = OWNER_CONTEXT;
}

/*
 * State changes that only a system call makes, so `current` is the user:
 * listen (CLOSE -> LISTEN: BPF_F_CLONE hands it to every accepted socket),
 * close or shutdown (-> FIN_WAIT1, CLOSE_WAIT -> LAST_ACK). Softirq-side
 * changes (SYN_RECV -> ESTABLISHED, -> CLOSE on a reset, TIME_WAIT) are left
 * alone. connect (CLOSE -> SYN_SENT) is left out on purpose: a connected
 * socket is noted at its first send or receive, or at its close, and noting
 * it at connect too cost one storage allocation more per connection (about
 * 0.8 us on connection churn, scripts/bench_churn.py).
 */
static __always_inline bool owner_transition(int oldstate, int newstate)
{
	return (oldstate == TCP_CLOSE && newstate == TCP_LISTEN) ||
	       newstate == TCP_FIN_WAIT1 ||
	       (oldstate == TCP_CLOSE_WAIT && newstate == TCP_LAST_ACK);
}

/* sk_protocol of a full socket. `btf`: sk is a BTF pointer (tp_btf, fentry),
 * read with plain loads (no helper call); the CO-RE bitfield read handles the
 * 8-bit bitfield of 4.16-5.5 and the u16 of 5.6+ either way. */
static __always_inline bool owner_tcp(const struct sock *sk, bool btf)
{
	if (!sk)
		return false;
	if (btf)
		return BPF_CORE_READ_BITFIELD(sk, sk_protocol) == IPPROTO_TCP;
	return BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) == IPPROTO_TCP;
}

/* At inet_sock_set_state: the transition (two of the tracepoint's arguments)
 * is compared first, so eight of a connection's ten state changes leave after
 * a few compares, before the socket is touched. */
static __always_inline void note_owner_at_state(const struct sock *sk, int oldstate, int newstate,
						bool btf)
{
	if (owner_transition(oldstate, newstate) && owner_tcp(sk, btf))
		note_owner(sk, btf);
}

#endif /* __TCPOOM_OWNER_BPF_H */
