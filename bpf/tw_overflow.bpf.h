/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tw_overflow: no TIME_WAIT bucket (TCPTimeWaitOverflow). fexit
 * inet_twsk_alloc, kretprobe inet_twsk_alloc, else inferred at the
 * inet_sock_set_state tracepoint.
 */
#ifndef __TCPOOM_TW_OVERFLOW_BPF_H
#define __TCPOOM_TW_OVERFLOW_BPF_H

#include "common.bpf.h"
#include "handoff.bpf.h"

/* The namespace's death row: TIME_WAIT count and limit. */
static __always_inline void read_death_row(struct inet_timewait_death_row *dr,
					   __s32 *tw_count, __s32 *max_tw)
{
	if (bpf_core_field_exists(dr->tw_refcount)) {
		/* 5.19+: refcount_t biased by one */
		*tw_count = BPF_CORE_READ(dr, tw_refcount.refs.counter) - 1;
	} else {
		struct inet_timewait_death_row___old *old = (void *)dr;

		*tw_count = BPF_CORE_READ(old, tw_count.counter);
	}
	*max_tw = BPF_CORE_READ(dr, sysctl_max_tw_buckets);
}

static __always_inline struct inet_timewait_death_row *death_row_of(const struct sock *sk)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	struct net___dr_ptr *pnet = (void *)net;

	if (bpf_core_field_exists(pnet->ipv4.tcp_death_row))	/* 5.19, 6.0 */
		return BPF_CORE_READ(pnet, ipv4.tcp_death_row);
	return __builtin_preserve_access_index(&net->ipv4.tcp_death_row);
}

static __always_inline int report_tw_overflow(const struct sock *sk,
					      struct inet_timewait_death_row *dr,
					      __u8 method, bool inferred)
{
	struct tcpoom_event ev, *e = &ev;
	__s32 tw_count, max_tw;

	count(CNT_TW_OVERFLOW);
	start_event(e, FAMILY_TW_OVERFLOW, method, sk, BPF_CORE_READ(sk, __sk_common.skc_prot));
	read_death_row(dr, &tw_count, &max_tw);
	mark_tw_overflow(e, tw_count, max_tw, inferred);
	emit(e);
	return 0;
}
/* sk_protocol: an 8-bit bitfield up to 5.5, a u16 from 5.6. */
static __always_inline __u32 sk_protocol_of(const struct sock *sk)
{
	return BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
}

/* inet_twsk_alloc() returns NULL at the bucket limit (or on a slab failure):
 * tcp_time_wait() then bumps TCPTimeWaitOverflow and closes the socket. DCCP
 * (dccp_time_wait) allocates from it too: TCP sockets only. */
SEC("fexit/inet_twsk_alloc")
int BPF_PROG(twsk_alloc_fexit, const struct sock *sk, struct inet_timewait_death_row *dr,
	     const int state, struct inet_timewait_sock *ret)
{
	if (ret || sk_protocol_of(sk) != IPPROTO_TCP || !pass_filters(sk))
		return 0;
	return report_tw_overflow(sk, dr, METHOD_FENTRY, false);
}

SEC("kprobe/inet_twsk_alloc")
int BPF_KPROBE(twsk_alloc_kprobe, const struct sock *sk, struct inet_timewait_death_row *dr)
{
	struct entry_key key = entry_key_now();
	struct entry_args a = { .sk = (__u64)sk, .arg = (__u64)dr };

	keep_entry(&key, &a);
	return 0;
}

SEC("kretprobe/inet_twsk_alloc")
int BPF_KRETPROBE(twsk_alloc_kretprobe, void *ret)
{
	struct entry_key key = entry_key_now();
	struct entry_args *a = bpf_map_lookup_elem(&entry, &key);
	struct entry_args args;

	if (!a) {
		if (!ret)	/* an overflow whose socket a nested call's entry replaced */
			count(CNT_UNPAIRED_BASE + FAMILY_TW_OVERFLOW);
		return 0;
	}
	args = *a;
	bpf_map_delete_elem(&entry, &key);
	if (ret || sk_protocol_of((const struct sock *)args.sk) != IPPROTO_TCP ||
	    !pass_filters((const struct sock *)args.sk))
		return 0;
	return report_tw_overflow((const struct sock *)args.sk,
				  (struct inet_timewait_death_row *)args.arg, METHOD_KPROBE, false);
}

/* Is a TIME_WAIT socket with this socket's 4-tuple in its ehash bucket?
 * After a successful inet_twsk_alloc() the hashdance put it at the head of
 * the bucket before tcp_done(); after an overflow there is none. */
static __always_inline bool tw_hashed(const struct sock *sk, struct inet_timewait_death_row *dr)
{
	struct inet_hashinfo *hinfo = NULL;
	struct inet_ehash_bucket *ehash;
	struct hlist_nulls_node *node = NULL;
	__u32 hash, mask;
	/* skc_portpair is { __be16 skc_dport; __u16 skc_num; }, and skc_num is
	 * already zero here (port released): rebuild it */
	__u32 ports = (__u32)BPF_CORE_READ(sk, __sk_common.skc_dport) |
		      ((__u32)local_port(sk) << 16);
	__u64 addrs = BPF_CORE_READ(sk, __sk_common.skc_addrpair);
	__u32 off = bpf_core_field_offset(struct sock_common, skc_nulls_node);

	if (bpf_core_field_exists(dr->hashinfo))	/* 6.1+: per-netns ehash possible */
		hinfo = BPF_CORE_READ(dr, hashinfo);
	if (!hinfo)
		hinfo = BPF_CORE_READ(sk, __sk_common.skc_prot, h.hashinfo);
	if (!hinfo)
		return false;
	hash = BPF_CORE_READ(sk, __sk_common.skc_hash);
	mask = BPF_CORE_READ(hinfo, ehash_mask);
	ehash = BPF_CORE_READ(hinfo, ehash);
	bpf_probe_read_kernel(&node, sizeof(node), &ehash[hash & mask].chain.first);
#pragma unroll
	for (int i = 0; i < 8; i++) {
		struct sock_common *sc;

		if (!node || ((unsigned long)node & 1))	/* nulls marker: end */
			return false;
		sc = (void *)node - off;
		if (BPF_CORE_READ(sc, skc_state) == TCP_TIME_WAIT &&
		    BPF_CORE_READ(sc, skc_portpair) == ports &&
		    BPF_CORE_READ(sc, skc_addrpair) == addrs)
			return true;
		node = BPF_CORE_READ(node, next);
	}
	return false;
}

/*
 * Tracepoint tier inference, on the transition to TCP_CLOSE (tcp_done() sets
 * it after tcp_time_wait() has tried for a bucket). An overflow is a close
 * from FIN_WAIT1/FIN_WAIT2/CLOSING where:
 *   - the namespace's TIME_WAIT count is at its limit,
 *   - no TIME_WAIT socket for the 4-tuple is in the ehash bucket,
 *   - our FIN was acked (snd_una == write_seq): not an abort with data or a
 *     FIN still in flight (close-path and timer-path memory aborts),
 *   - no error (resets received, timeouts set sk_err),
 *   - no reset just sent on it from this CPU (FIN_WAIT2 timeout, linger 0).
 */
static __always_inline int on_set_state(const struct sock *sk, int oldstate, int newstate, __u8 method)
{
	struct inet_timewait_death_row *dr;
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__s32 tw_count, max_tw;
	__u32 zero = 0;
	__u64 *note;

	if (newstate != TCP_CLOSE)
		return 0;
	if (oldstate != TCP_FIN_WAIT1 && oldstate != TCP_FIN_WAIT2 && oldstate != TCP_CLOSING)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	count(CNT_TW_CLOSES);
	if (BPF_CORE_READ(sk, sk_err))
		return 0;
	note = bpf_map_lookup_elem(&last_reset, &zero);
	if (note && *note == (__u64)sk)
		return 0;
	if (BPF_CORE_READ(tp, snd_una) != BPF_CORE_READ(tp, write_seq))
		return 0;
	dr = death_row_of(sk);
	read_death_row(dr, &tw_count, &max_tw);
	if (tw_count < max_tw)
		return 0;
	if (tw_hashed(sk, dr))
		return 0;
	if (!pass_filters(sk))
		return 0;
	return report_tw_overflow(sk, dr, method, true);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(set_state_btf, const struct sock *sk, int oldstate, int newstate)
{
	return on_set_state(sk, oldstate, newstate, METHOD_TP_BTF);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(set_state_raw, const struct sock *sk, int oldstate, int newstate)
{
	return on_set_state(sk, oldstate, newstate, METHOD_RAW_TP);
}

#endif /* __TCPOOM_TW_OVERFLOW_BPF_H */
