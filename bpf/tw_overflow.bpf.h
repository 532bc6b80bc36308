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

/*
 * Tracepoint tier: the overflow is inferred at the close, then confirmed or
 * cancelled by what follows on that socket (net/ipv4, 4.19 to 6.18).
 *
 * A genuine overflow (tcp_time_wait() without a bucket, then tcp_done()) is
 * never followed by a reset or an error on its socket: after TCP_CLOSE,
 * __tcp_close and tcp_disconnect skip their reset branches and the backlog
 * discards. The closes that look the same at TCP_CLOSE (FIN acked, no error)
 * are each followed by one:
 *   - tcp_disconnect (SO_LINGER {1,0} close, connect(AF_UNSPEC)) and the
 *     __tcp_close aborts from FIN_WAIT2 (unread data, linger2 < 0, memory) set
 *     TCP_CLOSE first and send their reset after: tcp_send_reset with the
 *     socket already in TCP_CLOSE, in process context, maybe on another CPU;
 *   - the FIN_WAIT1 branch of tcp_rcv_state_process (linger2 < 0, data or an
 *     out-of-order FIN after close) calls tcp_done() and its caller resets
 *     (tcp_v4/v6_send_reset: the tracepoint has the socket, sk_fullsock);
 *   - tcp_disconnect whose reset skb could not be allocated still sets
 *     sk_err = ECONNRESET before the linger-0 close destroys the socket.
 * So a candidate is kept per socket address in tw_pending; a reset on it in
 * TCP_CLOSE or a destroy with sk_err cancels it; TW_SETTLE_MS without either,
 * or any new state of that address (the object was freed and reused, or
 * reconnected), confirms it, and only then is it counted and sent. The
 * confirmation by age runs on every state change of any TCP socket
 * (tw_settle), and where none comes (a quiet host, the stop) in
 * tw_settle_run, which user space runs; before 5.10 user space takes them out
 * of tw_pending itself (tracer/kernel/loader.py settle_tw).
 * Resets sent before the close (a FIN_WAIT2 timeout, tcp_out_of_resources)
 * are noted per CPU: reset and tcp_done() run back to back in one timer.
 */
#define TW_SETTLE_NS ((__u64)TW_SETTLE_MS * 1000000)
#define TW_RESET_NOTE_NS 1000000ULL

#define TW_PENDING_MAX 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TW_PENDING_MAX);
	__type(key, __u64);			/* socket address */
	__type(value, struct tcpoom_event);	/* the event, sent once confirmed */
} tw_pending SEC(".maps");

struct tw_queued {
	__u64 sk;
	__u64 ts;	/* ts_ns of the candidate: a newer one at the address is not it */
};

/* Candidates in the order they were made, for the confirmation by age. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, TW_PENDING_MAX);
	__type(value, struct tw_queued);
} tw_fifo SEC(".maps");

/* Candidates that may still be in tw_pending: every check costs one read
 * while it is 0. It must never read 0 while one is pending, or a confirmation
 * (a new life at the address) or a cancel on another CPU is skipped: it is
 * raised before a candidate is stored and lowered only after a popped one was
 * decided, so it may count high for a moment, never low. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} tw_queued_n SEC(".maps");

struct tw_reset_note {
	__u64 sk;
	__u64 ts;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tw_reset_note);
} tw_reset_note SEC(".maps");

static __always_inline __s64 *tw_open(void)
{
	__u32 zero = 0;
	__s64 *n = bpf_map_lookup_elem(&tw_queued_n, &zero);

	return n && *n > 0 ? n : NULL;
}

/* Confirm the candidate of `sk` made at `ts` (0: whichever it is). The delete
 * decides, once, between this and a cancel on another CPU (or user space). */
static __always_inline void tw_confirm(__u64 sk, __u64 ts)
{
	struct tcpoom_event *v = bpf_map_lookup_elem(&tw_pending, &sk);
	struct tcpoom_event *e;

	if (!v || (ts && v->ts_ns != ts))
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		if (!bpf_map_delete_elem(&tw_pending, &sk)) {
			count(CNT_TW_OVERFLOW);
			count(CNT_LOST_BASE + FAMILY_TW_OVERFLOW);
		}
		return;
	}
	__builtin_memcpy(e, v, sizeof(*e));
	/* v may have been confirmed on another CPU meanwhile and its slot
	 * reused by a newer candidate at this address: not this one to take */
	if ((ts && e->ts_ns != ts) || bpf_map_delete_elem(&tw_pending, &sk)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return;
	}
	count(CNT_TW_OVERFLOW);
	bpf_ringbuf_submit(e, wakeup_flags());
}

/* Take the oldest candidate if it is past TW_SETTLE_NS (peek first, so the
 * queue stays in age order) and confirm it; then lower the count. Returns
 * false when there is none to take. */
static __always_inline bool tw_settle_one(__s64 *n, __u64 now)
{
	struct tw_queued q;

	if (bpf_map_peek_elem(&tw_fifo, &q) || (__s64)(now - q.ts) < (__s64)TW_SETTLE_NS)
		return false;
	if (bpf_map_pop_elem(&tw_fifo, &q))
		return false;
	if ((__s64)(now - q.ts) < (__s64)TW_SETTLE_NS) {
		/* another CPU took the one we peeked: this one is too young, back
		 * it goes (at the tail: it is confirmed a little late, never early) */
		if (!bpf_map_push_elem(&tw_fifo, &q, 0))
			return false;
	}
	tw_confirm(q.sk, q.ts);
	__sync_fetch_and_add(n, -1);
	return true;
}

/* Confirm the candidates older than TW_SETTLE_NS, oldest first, a few a call. */
static __always_inline void tw_settle(void)
{
	__s64 *n = tw_open();
	__u64 now;

	if (!n)
		return;
	now = bpf_ktime_get_ns();
#pragma unroll
	for (int i = 0; i < 4; i++)
		if (!tw_settle_one(n, now))
			break;
}

/* Resets and errored destroys are rare next to state changes: the delete is
 * tried without the count's gate. */
static __always_inline void tw_cancel(const struct sock *sk)
{
	__u64 key = (__u64)sk;

	if (!bpf_map_delete_elem(&tw_pending, &key))
		count(CNT_TW_CANCELLED);
}

/* The head of a struct sock_common (addresses, hash, ports, family, state,
 * bound device, namespace, v6 addresses, the ehash chain link: the first 112
 * bytes on 6.18, fewer before), copied in one probe read instead of one a
 * field; fields are taken out at their CO-RE offsets. Every object on an ehash
 * chain (full, request and TIME_WAIT sockets) is larger than this. */
#define TW_HEAD_BYTES 128

struct tw_head {
	__u64 w[TW_HEAD_BYTES / 8];
};

#define HEAD(h, type, field) \
	(*(type *)((char *)(h)->w + bpf_core_field_offset(struct sock_common, field)))

static __always_inline bool tw_head_fits(void)
{
	return bpf_core_field_offset(struct sock_common, skc_nulls_node) + 8 <= TW_HEAD_BYTES &&
	       (!bpf_core_field_exists(struct sock_common, skc_v6_rcv_saddr) ||
		bpf_core_field_offset(struct sock_common, skc_v6_rcv_saddr) + 16 <= TW_HEAD_BYTES);
}

/* What a TIME_WAIT twin must have of the closing socket: namespace, family,
 * bound device, ports and full addresses, and the hash that picks its bucket. */
struct tw_key {
	__u64 net;
	__u64 addrpair;
	__u32 v6_daddr[4];
	__u32 v6_saddr[4];
	__u32 portpair;
	__u32 hash;
	__s32 bound_dev_if;
	__u16 family;
};

static __always_inline bool tw_v6(void)
{
	return bpf_core_field_exists(struct sock_common, skc_v6_daddr);
}

#define HEAD_V6(h, field, i) \
	(*(__u32 *)((char *)(h)->w + bpf_core_field_offset(struct sock_common, field) + 4 * (i)))

/* The key from a copied head (probe reads: raw_tp, kprobe). */
static __always_inline void tw_key_of_head(struct tw_key *k, const struct tw_head *h)
{
	k->net = HEAD(h, __u64, skc_net.net);
	k->addrpair = HEAD(h, __u64, skc_addrpair);
	k->portpair = HEAD(h, __u32, skc_portpair);
	k->hash = HEAD(h, __u32, skc_hash);
	k->bound_dev_if = HEAD(h, __s32, skc_bound_dev_if);
	k->family = HEAD(h, __u16, skc_family);
	if (k->family == AF_INET6 && tw_v6()) {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			k->v6_daddr[i] = HEAD_V6(h, skc_v6_daddr, i);
			k->v6_saddr[i] = HEAD_V6(h, skc_v6_rcv_saddr, i);
		}
	}
}

/* The key from a BTF socket pointer (tp_btf, fentry): plain loads, no helper
 * call (one probe read fewer on every close of the host). */
static __always_inline void tw_key_of_btf(struct tw_key *k, const struct sock *sk)
{
	const struct sock_common *c = &sk->__sk_common;

	k->net = (__u64)c->skc_net.net;
	k->addrpair = c->skc_addrpair;
	k->portpair = c->skc_portpair;
	k->hash = c->skc_hash;
	k->bound_dev_if = c->skc_bound_dev_if;
	k->family = c->skc_family;
	if (k->family == AF_INET6 && tw_v6()) {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			k->v6_daddr[i] = c->skc_v6_daddr.in6_u.u6_addr32[i];
			k->v6_saddr[i] = c->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
		}
	}
}

/* The bytes of a sock_common head that hold what an IPv4 twin is compared
 * on (skc_net is the last of them on every kernel so far; else the whole head). */
static __always_inline __u32 tw_v4_bytes(void)
{
	__u32 n = bpf_core_field_offset(struct sock_common, skc_net) + 8;

	if (bpf_core_field_offset(struct sock_common, skc_state) >= n ||
	    bpf_core_field_offset(struct sock_common, skc_bound_dev_if) + 4 > n ||
	    bpf_core_field_offset(struct sock_common, skc_family) + 2 > n ||
	    bpf_core_field_offset(struct sock_common, skc_portpair) + 4 > n ||
	    bpf_core_field_offset(struct sock_common, skc_addrpair) + 8 > n || n > TW_HEAD_BYTES)
		return TW_HEAD_BYTES;
	return n;
}

static __always_inline bool tw_same(const struct tw_head *a, const struct tw_key *k)
{
	if (HEAD(a, __u8, skc_state) != TCP_TIME_WAIT ||
	    HEAD(a, __u64, skc_net.net) != k->net ||
	    HEAD(a, __u16, skc_family) != k->family ||
	    HEAD(a, __u32, skc_portpair) != k->portpair ||
	    HEAD(a, __s32, skc_bound_dev_if) != k->bound_dev_if)
		return false;
	if (k->family != AF_INET6)
		return HEAD(a, __u64, skc_addrpair) == k->addrpair;
	if (!tw_v6())
		return true;	/* no CONFIG_IPV6: no v6 sockets either */
#pragma unroll
	for (int i = 0; i < 4; i++)
		if (HEAD_V6(a, skc_v6_daddr, i) != k->v6_daddr[i] ||
		    HEAD_V6(a, skc_v6_rcv_saddr, i) != k->v6_saddr[i])
			return false;
	return true;
}

/* Is this socket's TIME_WAIT twin in its ehash bucket? After a successful
 * inet_twsk_alloc() the hashdance put it at the head of the bucket before
 * tcp_done(); after an overflow there is none. The bucket's index mixes in
 * the namespace and the full v6 addresses, but other flows share buckets: a
 * twin matches namespace, family, bound device, ports and full addresses.
 * `sport`: the local port (skc_num is already zero here: port released).
 * Where the head does not fit TW_HEAD_BYTES (no kernel so far) or a read
 * fails, there is no twin: the candidate is kept, and confirmed or cancelled
 * as any other. */
static __always_inline bool tw_twin(const struct sock *sk, struct inet_timewait_death_row *dr,
				    __u16 sport, bool btf)
{
	struct inet_hashinfo *hinfo = NULL;
	struct inet_ehash_bucket *ehash;
	struct hlist_nulls_node *node = NULL;
	struct tw_head theirs = {};	/* a short copy leaves the rest: never read uninitialized */
	struct tw_key mine = {};
	__u32 off = bpf_core_field_offset(struct sock_common, skc_nulls_node);
	__u32 mask;

	if (!tw_head_fits())
		return false;
	if (btf) {
		tw_key_of_btf(&mine, sk);
	} else {
		if (bpf_probe_read_kernel(&theirs, sizeof(theirs), sk))
			return false;
		tw_key_of_head(&mine, &theirs);
	}
	/* skc_portpair is { __be16 skc_dport; __u16 skc_num; }: rebuild skc_num */
	mine.portpair = (mine.portpair & 0xffff) | ((__u32)sport << 16);
	if (btf && bpf_core_field_exists(dr->hashinfo)) {
		/* 6.1+ (per-netns ehash possible), set for every namespace at its
		 * creation: plain loads */
		hinfo = dr->hashinfo;
		if (!hinfo)
			return false;
		mask = hinfo->ehash_mask;
		ehash = hinfo->ehash;
	} else {
		if (bpf_core_field_exists(dr->hashinfo))
			hinfo = BPF_CORE_READ(dr, hashinfo);
		if (!hinfo)
			hinfo = BPF_CORE_READ(sk, __sk_common.skc_prot, h.hashinfo);
		if (!hinfo)
			return false;
		mask = BPF_CORE_READ(hinfo, ehash_mask);
		ehash = BPF_CORE_READ(hinfo, ehash);
	}
	bpf_probe_read_kernel(&node, sizeof(node), &ehash[mine.hash & mask].chain.first);
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (!node || ((unsigned long)node & 1))	/* nulls marker: end */
			return false;
		/* the twin is at the head: its IPv4 fields are in the first
		 * tw_v4_bytes(), a shorter copy (a probe read costs by the word) */
		if (mine.family != AF_INET6 &&
		    !bpf_probe_read_kernel(&theirs, tw_v4_bytes(), (void *)node - off) &&
		    tw_same(&theirs, &mine))
			return true;
		if (bpf_probe_read_kernel(&theirs, sizeof(theirs), (void *)node - off))
			return false;
		if (tw_same(&theirs, &mine))
			return true;
		node = (struct hlist_nulls_node *)HEAD(&theirs, __u64, skc_nulls_node.next);
	}
	return false;
}

/* 6.2+: a kernel address turned into a read-only BTF pointer (the verifier
 * makes it a register move; loads through it are fault-safe plain loads). */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/* The kernel's own BTF ids of the types cast to, set by the loader from the
 * kernel facts (read from /sys/kernel/btf/vmlinux, kept per boot). Not
 * bpf_core_type_id_kernel(): libbpf resolves that against the minimised BTF
 * of tracer/kernel/btfcache.py when it is used, whose ids are its own. */
const volatile __u32 btf_id_sock_common = 0;
const volatile __u32 btf_id_ehash_bucket = 0;
const volatile __u32 btf_id_tcp_sock = 0;

static __always_inline bool tw_same_cast(const struct sock_common *c, const struct tw_key *k)
{
	if (c->skc_state != TCP_TIME_WAIT || (__u64)c->skc_net.net != k->net ||
	    c->skc_family != k->family || c->skc_portpair != k->portpair ||
	    c->skc_bound_dev_if != k->bound_dev_if)
		return false;
	if (k->family != AF_INET6)
		return c->skc_addrpair == k->addrpair;
	if (!tw_v6())
		return true;
#pragma unroll
	for (int i = 0; i < 4; i++)
		if (c->skc_v6_daddr.in6_u.u6_addr32[i] != k->v6_daddr[i] ||
		    c->skc_v6_rcv_saddr.in6_u.u6_addr32[i] != k->v6_saddr[i])
			return false;
	return true;
}

/* tw_twin without a helper call: the bucket and the chain read through
 * bpf_rdonly_cast pointers. A nulls marker (an odd value below the kernel's
 * addresses) reads as zeros there: no TIME_WAIT state, a NULL next. */
static __always_inline bool tw_twin_cast(const struct sock *sk, struct inet_timewait_death_row *dr,
					 __u16 sport)
{
	const struct inet_ehash_bucket *b;
	const struct hlist_nulls_node *node;
	struct inet_hashinfo *hinfo;
	struct tw_key mine = {};
	__u64 off = bpf_core_field_offset(struct sock_common, skc_nulls_node);

	/* The entry's address is node - off, off a relocated register. 6.12's
	 * verifier refused that math ("math between untrusted_ptr_ pointer and
	 * register with unbounded min value") where 6.18's took it: the
	 * subtraction is written in asm below, and the mask keeps off bounded
	 * for any verifier that loses its value (skc_nulls_node is at 104 on
	 * 6.18); an offset the mask would cut takes the probe reads. */
	if (off > 0xff)
		return tw_twin(sk, dr, sport, true);
	asm volatile("%0 &= 0xff" : "+r"(off));
	tw_key_of_btf(&mine, sk);
	mine.portpair = (mine.portpair & 0xffff) | ((__u32)sport << 16);
	hinfo = dr->hashinfo;
	if (!hinfo)
		return false;
	b = bpf_rdonly_cast(hinfo->ehash + (mine.hash & hinfo->ehash_mask),
			    btf_id_ehash_bucket);
	node = b->chain.first;
	for (int i = 0; i < 8; i++) {	/* a bounded loop: 5.3+ */
		const struct sock_common *c;
		const void *head = node;

		if (!node)
			return false;
		/* a subtraction, not the addition of a negation clang would
		 * emit: verifiers before 6.13 lose the bounds of a negation */
		asm volatile("%0 -= %1" : "+r"(head) : "r"(off));
		c = bpf_rdonly_cast(head, btf_id_sock_common);
		if (tw_same_cast(c, &mine))
			return true;
		node = c->skc_nulls_node.next;
	}
	return false;
}

/* A reset sent just before, on this CPU, for this socket (timer paths). The
 * note is cleared by every close, so it never outlives its tcp_done(). */
static __always_inline bool tw_reset_before(const struct sock *sk)
{
	__u32 zero = 0;
	struct tw_reset_note *note = bpf_map_lookup_elem(&tw_reset_note, &zero);
	bool hit;

	if (!note || !note->sk)
		return false;
	hit = note->sk == (__u64)sk && bpf_ktime_get_ns() - note->ts < TW_RESET_NOTE_NS;
	note->sk = 0;
	return hit;
}

/* A candidate: stored until confirmed. Where the tables are full it is
 * confirmed at once (CNT_TW_UNCHECKED says how many were). */
static __always_inline int tw_candidate(struct tcpoom_event *e)
{
	struct tw_queued q = { .sk = e->skaddr, .ts = e->ts_ns };
	__u32 zero = 0;
	__s64 *n = bpf_map_lookup_elem(&tw_queued_n, &zero);

	count(CNT_TW_CANDIDATES);
	if (!n)
		goto at_once;
	__sync_fetch_and_add(n, 1);	/* before it is visible: never low */
	if (bpf_map_update_elem(&tw_pending, &q.sk, e, BPF_ANY)) {
		__sync_fetch_and_add(n, -1);
		goto at_once;
	}
	if (bpf_map_push_elem(&tw_fifo, &q, 0)) {
		int gone = bpf_map_delete_elem(&tw_pending, &q.sk);

		__sync_fetch_and_add(n, -1);
		if (gone)
			return 0;	/* cancelled meanwhile */
		goto at_once;
	}
	return 0;
at_once:
	count(CNT_TW_UNCHECKED);
	count(CNT_TW_OVERFLOW);
	emit(e);
	return 0;
}

/* The death row of a BTF socket pointer, with plain loads. */
static __always_inline struct inet_timewait_death_row *death_row_btf(const struct sock *sk)
{
	struct net *net = sk->__sk_common.skc_net.net;
	struct net___dr_ptr *pnet = (void *)net;

	if (bpf_core_field_exists(pnet->ipv4.tcp_death_row))	/* 5.19, 6.0 */
		return pnet->ipv4.tcp_death_row;
	return &net->ipv4.tcp_death_row;
}

/* The close's figures: no error, everything sent acknowledged, the local port
 * (released by now: inet_sport keeps it). On tp_btf one helper call turns sk
 * into a tcp_sock the verifier lets us load from (5.9+: bpf_skc_to_tcp_sock;
 * it also says whether sk is TCP), else probe reads. Returns false for a
 * socket that is not TCP or whose close is not clean. */
static __always_inline bool tw_clean_close(const struct sock *sk, __u16 *sport, bool btf, bool cast)
{
	if (cast) {
		/* 6.2+: bpf_rdonly_cast instead of the helper call (sk is a full
		 * socket at every inet_sock_set_state; its type is checked here) */
		const struct tcp_sock *tp;

		if (sk->sk_protocol != IPPROTO_TCP || sk->sk_type != SOCK_STREAM)
			return false;
		tp = bpf_rdonly_cast(sk, btf_id_tcp_sock);
		count(CNT_TW_CLOSES);
		if (sk->sk_err || tp->snd_una != tp->write_seq)
			return false;
		*sport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
		return true;
	}
	if (btf && bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_skc_to_tcp_sock)) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);

		if (!tp)
			return false;
		count(CNT_TW_CLOSES);
		if (tp->inet_conn.icsk_inet.sk.sk_err || tp->snd_una != tp->write_seq)
			return false;
		*sport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
		return true;
	}
	{
		struct tcp_sock *tp = (struct tcp_sock *)sk;

		if (sk_protocol_of(sk) != IPPROTO_TCP)
			return false;
		count(CNT_TW_CLOSES);
		if (BPF_CORE_READ(sk, sk_err) || BPF_CORE_READ(tp, snd_una) != BPF_CORE_READ(tp, write_seq))
			return false;
		*sport = local_port(sk);
		return true;
	}
}

/*
 * Every TCP state change of the host runs this (about ten a connection), so
 * the order is by cost: the transition (the tracepoint's arguments) first, the
 * TIME_WAIT queue's count (an inlined array read) next, and only a close from
 * FIN_WAIT1/FIN_WAIT2/CLOSING (one a connection) goes on to the socket's
 * fields and the ehash bucket.
 */
static __always_inline int on_set_state(const struct sock *sk, int oldstate, int newstate, __u8 method,
					bool cast)
{
	bool btf = METHOD_BTF(method);
	struct inet_timewait_death_row *dr;
	struct tcpoom_event ev, *e = &ev;
	__s32 tw_count, max_tw;
	bool reset_before;
	__u16 sport = 0;

	if (owner_at_set_state)
		note_owner_at_state(sk, oldstate, newstate, btf);
	if (tw_open()) {
		tw_settle();
		/* a new life at this address: the last one can no longer be cancelled */
		if (newstate != TCP_CLOSE && tw_open())
			tw_confirm((__u64)sk, 0);
	}
	if (newstate != TCP_CLOSE)
		return 0;
	reset_before = tw_reset_before(sk);
	if (oldstate != TCP_FIN_WAIT1 && oldstate != TCP_FIN_WAIT2 && oldstate != TCP_CLOSING)
		return 0;
	if (!tw_clean_close(sk, &sport, btf, cast) || reset_before)
		return 0;
	/* no test of the death row's count: a slab failure overflows below the
	 * limit, and another CPU's TIME_WAIT may expire before this tracepoint */
	dr = btf ? death_row_btf(sk) : death_row_of(sk);
	if (cast ? tw_twin_cast(sk, dr, sport) : tw_twin(sk, dr, sport, btf))
		return 0;
	if (!pass_filters(sk))
		return 0;
	if (tw_open())
		tw_confirm((__u64)sk, 0);	/* an older life at this address */
	start_event(e, FAMILY_TW_OVERFLOW, method, sk, BPF_CORE_READ(sk, __sk_common.skc_prot));
	e->state = oldstate;
	read_death_row(dr, &tw_count, &max_tw);
	mark_tw_overflow(e, tw_count, max_tw, true);
	return tw_candidate(e);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(set_state_btf, const struct sock *sk, int oldstate, int newstate)
{
	return on_set_state(sk, oldstate, newstate, METHOD_TP_BTF, false);
}

/* The same where the kernel has bpf_rdonly_cast (6.2+; the plan picks it from
 * the kernel's BTF): the twin is looked for with plain loads, not two probe
 * reads, on every close of the host. A program of its own: before 6.2 a call
 * to a kfunc the kernel lacks is refused even where it is never reached. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(state_cast_btf, const struct sock *sk, int oldstate, int newstate)
{
	return on_set_state(sk, oldstate, newstate, METHOD_TP_BTF, true);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(set_state_raw, const struct sock *sk, int oldstate, int newstate)
{
	return on_set_state(sk, oldstate, newstate, METHOD_RAW_TP, false);
}

/* tcp_send_reset: skb NULL for an active reset (tcp_send_active_reset), the
 * segment answered otherwise. Up to 6.11 tcp_v4_send_reset fires it only for
 * full sockets, from 6.12 also for none, timewait and request sockets. */
static __always_inline int on_tw_reset(const struct sock *sk, const void *skb)
{
	__u32 zero = 0;
	struct tw_reset_note *note;

	if (!sk)
		return 0;
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_CLOSE) {
		tw_cancel(sk);
		return 0;
	}
	/* a reset that answers a segment leaves sockets open (SYN_SENT): only
	 * active resets are followed by tcp_done() */
	if (skb)
		return 0;
	note = bpf_map_lookup_elem(&tw_reset_note, &zero);
	if (note) {
		note->sk = (__u64)sk;
		note->ts = bpf_ktime_get_ns();
	}
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tw_reset_btf, const struct sock *sk, const struct sk_buff *skb)
{
	return on_tw_reset(sk, skb);
}

SEC("raw_tp/tcp_send_reset")
int BPF_PROG(tw_reset_raw, const struct sock *sk, const struct sk_buff *skb)
{
	return on_tw_reset(sk, skb);
}

/* tcp_destroy_sock: a linger-0 close whose reset could not be allocated
 * still set sk_err = ECONNRESET; a genuine overflow never sets it. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tw_destroy_btf, const struct sock *sk)
{
	/* a plain load: this runs for every full TCP socket of the host */
	if (sk && sk->sk_err)
		tw_cancel(sk);
	return 0;
}

SEC("raw_tp/tcp_destroy_sock")
int BPF_PROG(tw_destroy_raw, const struct sock *sk)
{
	if (sk && BPF_CORE_READ(sk, sk_err))
		tw_cancel(sk);
	return 0;
}

/* Run by user space (BPF_PROG_TEST_RUN of raw_tp: 5.10+), never attached (the
 * loader's RUN_ONLY; the section only gives it a program type): the
 * confirmation by age where no TCP socket changes state (a quiet host, the
 * stop). Returns 1 when there may be more to confirm. */
SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tw_settle_run)
{
	__u64 now = bpf_ktime_get_ns();
	__s64 *n;

	for (int i = 0; i < 32; i++) {
		n = tw_open();
		if (!n || !tw_settle_one(n, now))
			return 0;
	}
	return 1;
}

#endif /* __TCPOOM_TW_OVERFLOW_BPF_H */
