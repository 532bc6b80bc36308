/* SPDX-License-Identifier: GPL-2.0 */
/*
 * oom_check: an orphan killed by tcp_check_oom (TcpExt TCPAbortOnMemory).
 * fexit tcp_check_oom, kretprobe tcp_check_oom, kretprobe
 * tcp_out_of_resources, tp_btf/raw_tp tcp_send_reset; the function tiers add
 * tcp_close/__tcp_close to tell the close path, and tcp_send_active_reset for
 * close-path aborts whose tcp_check_oom call was inlined into __tcp_close.
 */
#ifndef __TCPOOM_OOM_CHECK_BPF_H
#define __TCPOOM_OOM_CHECK_BPF_H

#include "common.bpf.h"
#include "handoff.bpf.h"

/* tid -> the socket tcp_close()/__tcp_close() is closing (struct closing_sk:
 * verdict.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct closing_sk);
} closing SEC(".maps");

/* Which path asked. The close path always passes shift 0; a timer handler
 * deferred to release_sock() at the end of tcp_close() (before 5.15, where
 * tcp_close holds everything) runs in the closing task too, but with the
 * socket's own shift. A close-path call marks the close as seen, so the reset
 * that follows is not reported again by on_active_reset(). */
static __always_inline __u8 caller_of(const struct sock *sk, int shift)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct closing_sk *c = bpf_map_lookup_elem(&closing, &tid);

	if (!c || c->sk != (__u64)sk || shift != 0)
		return CALLER_TIMER;
	c->oom_seen = 1;
	return CALLER_CLOSE;
}

/* (tid, cpu) -> the orphan and memory figures at tcp_check_oom's entry
 * (struct oom_inputs: verdict.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct entry_key);
	__type(value, struct oom_inputs);
} oom_inputs SEC(".maps");

static __always_inline void note_oom_inputs(const struct sock *sk)
{
	struct entry_key key = entry_key_now();
	struct tcpoom_event tmp;
	struct oom_inputs in;

	tmp.orphans = tmp.max_orphans = -1;
	tmp.memory_allocated = tmp.pressure_since = -1;
	tmp.tcp_mem[0] = tmp.tcp_mem[1] = tmp.tcp_mem[2] = -1;
	tmp.exact = tmp.derived = 0;
	fill_orphans(&tmp, sk);
	fill_memory(&tmp, BPF_CORE_READ(sk, __sk_common.skc_prot));
	keep_oom_inputs(&in, &tmp);
	bpf_map_update_elem(&oom_inputs, &key, &in, BPF_ANY);
}

/* A kill decision of tcp_check_oom. `inferred`: seen at the reset of the close
 * path, not at tcp_check_oom (inlined there): shift and caller by
 * construction. The counter counts before the ring buffer, so a full buffer
 * loses detail, not counts. */
static __always_inline int report_check_oom(const struct sock *sk, int shift, __u8 caller,
					    __u8 method, bool inferred)
{
	struct tcpoom_event ev, *e = &ev;
	struct entry_key key = entry_key_now();
	struct oom_inputs *in = bpf_map_lookup_elem(&oom_inputs, &key);

	if (!pass_filters(sk))
		goto out;
	start_event(e, FAMILY_OOM_CHECK, method, sk, BPF_CORE_READ(sk, __sk_common.skc_prot));
	if (in && !inferred)
		use_oom_inputs(e, in);
	else
		fill_orphans(e, sk);
	decide_oom(e, shift, caller, inferred, sock_min_sndbuf());
	tally_oom(cpu_counters(), e);
	emit(e);
out:
	if (in && !inferred)
		bpf_map_delete_elem(&oom_inputs, &key);
	return 0;
}

static __always_inline void close_enter(const struct sock *sk)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct closing_sk *c = bpf_map_lookup_elem(&closing, &tid);
	struct closing_sk v = { .sk = (__u64)sk };

	/* tcp_close() -> __tcp_close(): keep what the outer call noted */
	if (c && c->sk == (__u64)sk)
		return;
	bpf_map_update_elem(&closing, &tid, &v, BPF_ANY);
}

static __always_inline void close_exit(void)
{
	__u64 tid = bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&closing, &tid);
}

/* tcp_close() (sk_prot->close, never inlined) and __tcp_close() (5.15+, also
 * called by MPTCP; may be inlined into tcp_close). Whichever returns first ends
 * the close: what tcp_close does after __tcp_close is release_sock(), where
 * deferred timer handlers run. */
SEC("fentry/tcp_close")
int BPF_PROG(tcp_close_enter_fentry, struct sock *sk)
{
	close_enter(sk);
	return 0;
}

SEC("fexit/tcp_close")
int BPF_PROG(tcp_close_exit_fexit, struct sock *sk)
{
	close_exit();
	return 0;
}

SEC("fentry/__tcp_close")
int BPF_PROG(close_enter_fentry, struct sock *sk)
{
	close_enter(sk);
	return 0;
}

SEC("fexit/__tcp_close")
int BPF_PROG(close_exit_fexit, struct sock *sk)
{
	close_exit();
	return 0;
}

SEC("fentry/tcp_check_oom")
int BPF_PROG(check_oom_fentry, const struct sock *sk, int shift)
{
	note_oom_inputs(sk);
	return 0;
}

SEC("fexit/tcp_check_oom")
int BPF_PROG(check_oom_fexit, const struct sock *sk, int shift, bool ret)
{
	struct entry_key key;
	__u8 caller;

	count(CNT_OOM_CALLS);
	caller = caller_of(sk, shift);
	if (!ret) {
		key = entry_key_now();
		bpf_map_delete_elem(&oom_inputs, &key);
		return 0;
	}
	return report_check_oom(sk, shift, caller, METHOD_FENTRY, false);
}

SEC("kprobe/tcp_close")
int BPF_KPROBE(tcp_close_enter_kprobe, struct sock *sk)
{
	close_enter(sk);
	return 0;
}

SEC("kretprobe/tcp_close")
int BPF_KRETPROBE(tcp_close_exit_kretprobe)
{
	close_exit();
	return 0;
}

SEC("kprobe/__tcp_close")
int BPF_KPROBE(close_enter_kprobe, struct sock *sk)
{
	close_enter(sk);
	return 0;
}

SEC("kretprobe/__tcp_close")
int BPF_KRETPROBE(close_exit_kretprobe)
{
	close_exit();
	return 0;
}

SEC("kprobe/tcp_check_oom")
int BPF_KPROBE(check_oom_kprobe, const struct sock *sk, int shift)
{
	struct entry_key key = entry_key_now();
	struct entry_args a = { .sk = (__u64)sk, .arg = shift };

	keep_entry(&key, &a);
	note_oom_inputs(sk);
	return 0;
}

SEC("kretprobe/tcp_check_oom")
int BPF_KRETPROBE(check_oom_kretprobe, bool ret)
{
	struct entry_key key = entry_key_now();
	struct entry_args *a = bpf_map_lookup_elem(&entry, &key);
	struct entry_args args;
	__u8 caller;

	if (!a) {
		if (ret)	/* a socket killed, its arguments taken by a nested call */
			count(CNT_UNPAIRED_BASE + FAMILY_OOM_CHECK);
		return 0;
	}
	args = *a;
	bpf_map_delete_elem(&entry, &key);
	count(CNT_OOM_CALLS);
	caller = caller_of((const struct sock *)args.sk, (int)args.arg);
	if (!ret) {
		bpf_map_delete_elem(&oom_inputs, &key);
		return 0;
	}
	return report_check_oom((const struct sock *)args.sk, (int)args.arg, caller, METHOD_KPROBE,
				false);
}

/*
 * Close-path aborts whose tcp_check_oom() call the compiler inlined into
 * __tcp_close()/tcp_close() (same file; Debian's 6.1 and 6.12 builds call it,
 * other builds need not): the abort is then seen at its reset. In
 * adjudge_to_death, after sock_orphan() (SOCK_DEAD), __tcp_close sends an
 * active reset after tcp_set_state(TCP_CLOSE) in two cases only:
 *   - FIN_WAIT2 with linger2 < 0 (TCPAbortOnLinger): the FIN was acked,
 *     snd_una == write_seq;
 *   - tcp_check_oom(sk, 0) said yes (TCPAbortOnMemory): the socket is not in
 *     FIN_WAIT2 with linger2 < 0; from FIN_WAIT1, CLOSING or LAST_ACK its FIN
 *     is unacked (snd_una != write_seq).
 * The other resets of a close (unread data, SO_LINGER 0, repair) come before
 * sock_orphan(). Where tcp_check_oom was seen for this close, nothing is done
 * here: it reported already.
 */
static __always_inline bool sock_dead(const struct sock *sk)
{
	unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);

	return flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DEAD));
}

static __always_inline int on_active_reset(const struct sock *sk, __u8 method)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct closing_sk *c = bpf_map_lookup_elem(&closing, &tid);
	struct tcp_sock *tp = (struct tcp_sock *)sk;

	if (!c || c->sk != (__u64)sk || c->oom_seen)
		return 0;
	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_CLOSE || !sock_dead(sk))
		return 0;
	if (BPF_CORE_READ(tp, linger2) < 0 &&
	    BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq))
		return 0;	/* TCPAbortOnLinger */
	c->oom_seen = 1;
	return report_check_oom(sk, 0, CALLER_CLOSE, method, true);
}

SEC("fentry/tcp_send_active_reset")
int BPF_PROG(active_reset_fentry, struct sock *sk)
{
	return on_active_reset(sk, METHOD_FENTRY);
}

SEC("kprobe/tcp_send_active_reset")
int BPF_KPROBE(active_reset_kprobe, struct sock *sk)
{
	return on_active_reset(sk, METHOD_KPROBE);
}

/*
 * Recompute tcp_out_of_resources()'s shift from the socket, as the kernel
 * does (net/ipv4/tcp_timer.c, same logic 2.6.38-6.19):
 *   shift++ if nothing was sent for more than 2 * rto_max, or !do_reset
 *   shift++ if sk->sk_err_soft
 * rto_max is the per-socket icsk_rto_max from 6.18 (tcp_rto_max(sk)), the
 * constant TCP_RTO_MAX (120 s) before. *do_reset is 1, 0, or -1 when unknown:
 * then the first step is unknown unless the idle test alone decides it.
 */
static __always_inline int timer_shift(const struct sock *sk, int do_reset, bool *lower_bound)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	__u32 now = (__u32)bpf_jiffies64();
	__u32 rto_max = 120 * hz;
	__s32 idle = now - BPF_CORE_READ(tp, lsndtime);
	int shift = 0;

	if (bpf_core_field_exists(icsk->icsk_rto_max))
		rto_max = BPF_CORE_READ(icsk, icsk_rto_max);
	*lower_bound = false;
	if (idle > (__s32)(2 * rto_max) || do_reset == 0)
		shift++;
	else if (do_reset < 0)
		*lower_bound = true;
	if (BPF_CORE_READ(sk, sk_err_soft))
		shift++;
	return shift;
}

/*
 * Tracepoint tier: the do_reset tcp_out_of_resources() was called with, per
 * timer (net/ipv4/tcp_timer.c, the same in 4.19, 5.10, 6.1, 6.12 and 6.18):
 *  - tcp_probe_timer() (reached only with nothing in flight) passes true;
 *  - tcp_write_timeout() (the retransmit timer: packets in flight) passes
 *    alive || !retransmits_timed_out(), alive = icsk_rto < rto_max. icsk_rto
 *    is already backed off (tcp_retransmit_timer doubles it after each
 *    round); icsk_rto << icsk_backoff is the probe timer's formula for its
 *    orphan retries and counted the backoff twice (finding 5);
 *  - not alive: tcp_out_of_resources() resets anyway when the last send is
 *    at most TCP_TIMEWAIT_LEN ago, so a reset seen after a longer idle (with
 *    packets in flight) proves do_reset was true.
 * -1 when none of these decides: not alive and within 60 s of the last send
 * (retransmits_timed_out() would need the retry budget, not recomputed).
 */
static __always_inline int do_reset_of(const struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	__u32 rto_max = 120 * hz;
	__s32 idle;

	if (BPF_CORE_READ(tp, packets_out) == 0)
		return 1;	/* probe timer */
	if (bpf_core_field_exists(icsk->icsk_rto_max))
		rto_max = BPF_CORE_READ(icsk, icsk_rto_max);
	if (BPF_CORE_READ(icsk, icsk_rto) < rto_max)
		return 1;	/* alive */
	idle = (__u32)bpf_jiffies64() - BPF_CORE_READ(tp, lsndtime);
	if (idle > (__s32)(TCP_TIMEWAIT_LEN_S * hz))
		return 1;	/* reset only because do_reset was true */
	return -1;
}

/* Kernels without tcp_check_oom: tcp_out_of_resources(sk, do_reset) itself.
 * It is static and may be inlined: the plan checks kallsyms first. */
SEC("kprobe/tcp_out_of_resources")
int BPF_KPROBE(out_of_resources_kprobe, struct sock *sk, bool do_reset)
{
	struct entry_key key = entry_key_now();
	struct entry_args a = { .sk = (__u64)sk, .arg = do_reset };

	keep_entry(&key, &a);
	return 0;
}

SEC("kretprobe/tcp_out_of_resources")
int BPF_KRETPROBE(out_of_resources_kretprobe, int ret)
{
	struct entry_key key = entry_key_now();
	struct entry_args *a = bpf_map_lookup_elem(&entry, &key);
	struct tcpoom_event ev, *e = &ev;
	const struct sock *sk;
	bool lower;
	int do_reset;

	if (!a) {
		if (ret)
			count(CNT_UNPAIRED_BASE + FAMILY_OOM_CHECK);
		return 0;
	}
	sk = (const struct sock *)a->sk;
	do_reset = a->arg;
	bpf_map_delete_elem(&entry, &key);
	count(CNT_OOM_CALLS);
	if (!ret || !pass_filters(sk))
		return 0;
	start_event(e, FAMILY_OOM_CHECK, METHOD_KPROBE, sk, BPF_CORE_READ(sk, __sk_common.skc_prot));
	fill_orphans(e, sk);
	e->shift = timer_shift(sk, do_reset, &lower);
	e->derived |= FIELD_SHIFT;
	e->caller = CALLER_TIMER;
	e->exact |= FIELD_CALLER;
	fill_verdict(e, sock_min_sndbuf());
	tally_oom(cpu_counters(), e);
	emit(e);
	return 0;
}

/*
 * Tracepoint tier. tcp_send_reset fires for active resets too (skb NULL), and
 * from 6.12 both memory-abort paths pass SK_RST_REASON_TCP_ABORT_ON_MEMORY.
 * Its numeric value differs between versions: CO-RE resolves it from the
 * running kernel's BTF. The close path sets TCP_CLOSE before the reset
 * (__tcp_close), the timer path resets first and then calls tcp_done(), so the
 * state tells the callers apart.
 */
static __always_inline int on_send_reset(const struct sock *sk, int reason, __u8 method)
{
	struct tcpoom_event ev, *e = &ev;
	bool lower = false;

	if (!oom_from_resets || !sk)
		return 0;
	if (!bpf_core_enum_value_exists(enum sk_rst_reason, SK_RST_REASON_TCP_ABORT_ON_MEMORY) ||
	    reason != bpf_core_enum_value(enum sk_rst_reason, SK_RST_REASON_TCP_ABORT_ON_MEMORY))
		return 0;
	if (!pass_filters(sk))
		return 0;
	start_event(e, FAMILY_OOM_CHECK, method, sk, BPF_CORE_READ(sk, __sk_common.skc_prot));
	fill_orphans(e, sk);
	e->reason = reason;
	e->verdict |= VERDICT_RESET;
	if (e->state == TCP_CLOSE) {
		e->caller = CALLER_CLOSE;
		e->shift = 0;	/* __tcp_close calls tcp_check_oom(sk, 0) */
	} else {
		e->caller = CALLER_TIMER;
		e->shift = timer_shift(sk, do_reset_of(sk), &lower);
		if (lower)
			e->verdict |= VERDICT_SHIFT_MIN;
	}
	e->derived |= FIELD_SHIFT | FIELD_CALLER;
	fill_verdict(e, sock_min_sndbuf());
	tally_oom(cpu_counters(), e);
	emit(e);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(send_reset_btf, const struct sock *sk, const struct sk_buff *skb, int reason)
{
	return on_send_reset(sk, reason, METHOD_TP_BTF);
}

SEC("raw_tp/tcp_send_reset")
int BPF_PROG(send_reset_raw, const struct sock *sk, const struct sk_buff *skb, int reason)
{
	return on_send_reset(sk, reason, METHOD_RAW_TP);
}


#endif /* __TCPOOM_OOM_CHECK_BPF_H */
