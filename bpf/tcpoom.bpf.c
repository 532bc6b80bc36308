// SPDX-License-Identifier: GPL-2.0
/*
 * tcpoom kernel programs: every TCP socket-memory decision, with the figures
 * that drove it. One object holds every attach method of every family; the
 * loader (tracer/loader.py) turns on, by autoload, only the programs of the
 * methods its probe plan chose for the running kernel.
 *
 *   family       best ... fallback
 *   oom_check    fexit tcp_check_oom, kretprobe tcp_check_oom,
 *                kretprobe tcp_out_of_resources, tp_btf/raw_tp tcp_send_reset
 *                (function tiers: plus tcp_close/__tcp_close to tell the close
 *                path, and tcp_send_active_reset for close-path aborts whose
 *                tcp_check_oom call was inlined into __tcp_close)
 *   tw_overflow  fexit inet_twsk_alloc, kretprobe inet_twsk_alloc,
 *                tp_btf/raw_tp inet_sock_set_state (inference)
 *   mem_exceed   tp_btf/raw_tp sock_exceed_buf_limit
 *   pressure     fentry/kprobe tcp_enter_memory_pressure, tcp_leave_memory_pressure
 *                (else sampled from /proc in user space)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "core_fixes.bpf.h"
#include "tcpoom.h"

#define AF_INET 2
#define AF_INET6 10
#define TCP_TIMEWAIT_LEN_S 60	/* include/net/tcp.h, every version */

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader before load (.rodata). */
const volatile __u32 filter_netns = 0;	/* 0: every namespace */
const volatile __u32 filter_pid = 0;	/* tgid of the context */
const volatile __u16 filter_port = 0;	/* local or remote port */
const volatile __u32 hz = 250;		/* CONFIG_HZ, for jiffies arithmetic */
const volatile __u8 oom_from_resets = 0; /* tcp_send_reset program reports oom_check */
/* Data symbols, from /proc/kallsyms where the kernel lists them
 * (CONFIG_KALLSYMS_ALL); 0 where it does not. Plain addresses rather than
 * __ksym externs, so libbpf never reads kallsyms itself at start-up. */
const volatile __u64 orphan_cache_addr = 0;	/* static int tcp_orphan_cache, 5.15.16+/6.0+ */
const volatile __u64 max_orphans_addr = 0;	/* int sysctl_tcp_max_orphans */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);	/* resized by the loader */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcpoom_counters);
} counters SEC(".maps");

/* tid -> socket being closed by tcp_close()/__tcp_close(): tells tcp_check_oom's
 * close-path calls from the timer path's (the close path runs in the closing
 * task's context), and whether that close's tcp_check_oom call was seen. */
struct closing_sk {
	__u64 sk;
	__u32 oom_seen;	/* tcp_check_oom was called out of line for this close */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct closing_sk);
} closing SEC(".maps");

/* Per CPU: the last socket a reset was sent on. A reset followed by
 * tcp_done() on the same CPU is not a TIME_WAIT overflow. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_reset SEC(".maps");

/* kprobe tiers: arguments saved at entry for the return probe. */
struct entry_args {
	__u64 sk;
	__u64 arg;	/* tcp_check_oom: shift; inet_twsk_alloc: death row */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct entry_args);
} entry SEC(".maps");

/* Keeps the event type in the object's BTF, so the layout can be checked. */
struct tcpoom_event _event_type = {};

static __always_inline void count(__u32 slot)
{
	__u32 zero = 0;
	struct tcpoom_counters *c = bpf_map_lookup_elem(&counters, &zero);

	if (c && slot < CNT_MAX)
		__sync_fetch_and_add(&c->slot[slot], 1);
}

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* The local port. tcp_set_state(TCP_CLOSE) releases the bound port
 * (inet_put_port zeroes skc_num) before the tracepoint fires; inet_sport keeps
 * it. */
static __always_inline __u16 local_port(const struct sock *sk)
{
	__u16 num = BPF_CORE_READ(sk, __sk_common.skc_num);

	if (num)
		return num;
	return bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
}

/* The filters are checked before anything is built; the family's counter
 * counts only what passes them, so it compares with the filtered namespace's
 * own TcpExt counters. */
static __always_inline bool pass_filters(const struct sock *sk)
{
	if (filter_netns && sk && sk_netns(sk) != filter_netns)
		goto out;
	if (filter_pid && (bpf_get_current_pid_tgid() >> 32) != filter_pid)
		goto out;
	if (filter_port && sk) {
		__u16 sport = local_port(sk);
		__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

		if (sport != filter_port && dport != filter_port)
			goto out;
	}
	return true;
out:
	count(CNT_FILTERED);
	return false;
}

/* Events are built on the stack and copied into the ring buffer: a failed
 * copy costs the detail only, never the count (counters are bumped before). */
static __always_inline void init_event(struct tcpoom_event *e, __u8 family, __u8 method)
{
	__u64 id;

	__builtin_memset(e, 0, sizeof(*e));
	id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->cpu = bpf_get_smp_processor_id();
	e->family = family;
	e->method = method;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->memory_allocated = -1;
	e->tcp_mem[0] = e->tcp_mem[1] = e->tcp_mem[2] = -1;
	e->pressure_since = -1;
	e->orphans = e->max_orphans = e->shift = -1;
	e->wmem_queued = e->rmem_alloc = e->sndbuf = e->rcvbuf = -1;
	e->tw_count = e->max_tw_buckets = -1;
}

/* Wakeups. With flags 0 the kernel wakes a consumer that has caught up for
 * every record (an irq_work, then a poll return and a read in user space): in
 * a storm of single events that is a wakeup per handful of records, and the
 * consumer's fixed cost per wakeup and per batch dominates. The consumer reads
 * on a short timer instead (tracer/ringbuf.py POLL_PERIOD_S), so records go in
 * silently while the ring is less than a quarter full; above that each record
 * forces a wakeup (the consumer ignores wakeups below the same mark), so a
 * burst is drained long before the ring fills. bpf_ringbuf_query: 5.8, as the
 * ring buffer itself. */
static __always_inline void emit(struct tcpoom_event *e)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >=
	    bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / WAKEUP_FILL_DIVISOR)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&events, e, sizeof(*e), flags))
		count(CNT_LOST_BASE + e->family);
}

/* 4-tuple, state, queues. */
static __always_inline void fill_socket(struct tcpoom_event *e, const struct sock *sk)
{
	e->skaddr = (__u64)sk;
	e->netns = sk_netns(sk);
	e->af = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = local_port(sk);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (e->af == AF_INET) {
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	} else if (bpf_core_field_exists(sk->__sk_common.skc_v6_daddr)) {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	e->wmem_queued = BPF_CORE_READ(sk, sk_wmem_queued);
	e->rmem_alloc = BPF_CORE_READ(sk, sk_backlog.rmem_alloc.counter);
	e->sndbuf = BPF_CORE_READ(sk, sk_sndbuf);
	e->rcvbuf = BPF_CORE_READ(sk, sk_rcvbuf);
	e->exact |= FIELD_SOCKET;
}

/* memory_allocated against tcp_mem, through sk->sk_prot: robust on every
 * version (the tcp_memory_allocated symbol is gone by 6.18). From 6.0 the
 * global figure leaves out a per-CPU residue (per_cpu_fw_alloc), exactly as
 * the kernel's own comparison does. */
static __always_inline void fill_memory(struct tcpoom_event *e, struct proto *prot)
{
	atomic_long_t *allocated = BPF_CORE_READ(prot, memory_allocated);
	long *mem = BPF_CORE_READ(prot, sysctl_mem);
	unsigned long *pressure = BPF_CORE_READ(prot, memory_pressure);
	long v = 0;

	if (allocated && !bpf_probe_read_kernel(&v, sizeof(v), &allocated->counter)) {
		e->memory_allocated = v < 0 ? 0 : v;
		e->exact |= FIELD_MEMORY;
	}
	if (mem && !bpf_probe_read_kernel(e->tcp_mem, sizeof(e->tcp_mem), mem))
		e->exact |= FIELD_TCP_MEM;
	/* 4.13+: jiffies when pressure began, 0 when not under pressure. */
	if (pressure && !bpf_probe_read_kernel(&v, sizeof(v), pressure)) {
		e->pressure_since = v;
		e->exact |= FIELD_PRESSURE;
	}
}

/* The orphan count and limit where the kernel lets us read them. */
static __always_inline void fill_orphans(struct tcpoom_event *e, const struct sock *sk)
{
	int v;

	if (max_orphans_addr &&
	    !bpf_probe_read_kernel(&v, sizeof(v), (void *)max_orphans_addr)) {
		e->max_orphans = v;
		e->exact |= FIELD_MAX_ORPHANS;
	}
	/* 5.15.16+/6.0+: tcp_too_many_orphans() compares this 100 ms cache, so
	 * it is the exact figure of the decision. */
	if (orphan_cache_addr &&
	    !bpf_probe_read_kernel(&v, sizeof(v), (void *)orphan_cache_addr)) {
		e->orphans = v;
		e->exact |= FIELD_ORPHANS;
		return;
	}
	/* up to 5.15.0: a percpu_counter; the kernel reads its count first and
	 * sums the per-CPU parts only when that is over the limit. */
	struct proto___orphan_pcc *prot = (void *)BPF_CORE_READ(sk, __sk_common.skc_prot);

	if (bpf_core_field_exists(prot->orphan_count) &&
	    bpf_core_type_id_kernel(struct percpu_counter)) {
		struct percpu_counter *pcc = BPF_CORE_READ(prot, orphan_count);
		s64 count = 0;

		if (pcc && !bpf_probe_read_kernel(&count, sizeof(count), &pcc->count)) {
			e->orphans = count < 0 ? 0 : count;
			e->derived |= FIELD_ORPHANS;
		}
	}
}

/* SOCK_MIN_SNDBUF = 2 * (2048 + SKB_DATA_ALIGN(sizeof(struct sk_buff))). */
static __always_inline int sock_min_sndbuf(void)
{
	int skb = (bpf_core_type_size(struct sk_buff) + 63) & ~63;

	return 2 * (2048 + skb);
}

/* tcp_out_of_memory(): the memory half of the verdict, from exact reads. */
static __always_inline bool out_of_memory(const struct tcpoom_event *e)
{
	return e->wmem_queued > sock_min_sndbuf() && e->memory_allocated >= 0 &&
	       e->tcp_mem[2] >= 0 && e->memory_allocated > e->tcp_mem[2];
}

/* Fill the verdict of a kill decision. With the orphan count known both
 * halves are recomputed; without it, the orphan half is implied when the
 * memory half is false (the kernel said yes to one of the two). */
static __always_inline void fill_verdict(struct tcpoom_event *e)
{
	e->verdict |= VERDICT_KILLED;
	if (out_of_memory(e))
		e->verdict |= VERDICT_MEMORY;
	if (e->orphans >= 0 && e->max_orphans >= 0 && e->shift >= 0) {
		if (((__s64)e->orphans << e->shift) > e->max_orphans)
			e->verdict |= VERDICT_ORPHANS;
	} else if (!(e->verdict & VERDICT_MEMORY)) {
		e->verdict |= VERDICT_ORPHANS;
	}
	e->derived |= FIELD_VERDICT;
}

static __always_inline void count_oom(const struct tcpoom_event *e)
{
	count(CNT_OOM_CHECK);
	if (e->verdict & VERDICT_ORPHANS)
		count(CNT_OOM_ORPHANS);
	if (e->verdict & VERDICT_MEMORY)
		count(CNT_OOM_MEMORY);
	if (e->caller == CALLER_CLOSE)
		count(CNT_OOM_CLOSE);
	else if (e->caller == CALLER_TIMER)
		count(CNT_OOM_TIMER);
	if (e->verdict & VERDICT_RESET)
		count(CNT_OOM_RESET);
}

/* ---------------------------------------------------------------- oom_check */

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

/* A kill decision of tcp_check_oom. `inferred`: seen at the reset of the close
 * path, not at tcp_check_oom (inlined there): shift and caller by
 * construction. The counter counts before the ring buffer, so a full buffer
 * loses detail, not counts. */
/* The orphan figures as tcp_check_oom() found them, read on entry: by its
 * return another CPU's 100 ms refresh may already have replaced the cached
 * count (orphans die in bulk when the limit bites). */
struct oom_inputs {
	__s32 orphans;
	__s32 max_orphans;
	__u32 exact;
	__u32 derived;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct oom_inputs);
} oom_inputs SEC(".maps");

static __always_inline void note_oom_inputs(const struct sock *sk)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct tcpoom_event tmp;
	struct oom_inputs in;

	tmp.orphans = tmp.max_orphans = -1;
	tmp.exact = tmp.derived = 0;
	fill_orphans(&tmp, sk);
	in.orphans = tmp.orphans;
	in.max_orphans = tmp.max_orphans;
	in.exact = tmp.exact;
	in.derived = tmp.derived;
	bpf_map_update_elem(&oom_inputs, &tid, &in, BPF_ANY);
}

static __always_inline int report_check_oom(const struct sock *sk, int shift, __u8 caller,
					    __u8 method, bool inferred)
{
	struct tcpoom_event ev, *e = &ev;
	__u64 tid = bpf_get_current_pid_tgid();
	struct oom_inputs *in = bpf_map_lookup_elem(&oom_inputs, &tid);

	if (!pass_filters(sk))
		goto out;
	init_event(e, FAMILY_OOM_CHECK, method);
	fill_socket(e, sk);
	fill_memory(e, BPF_CORE_READ(sk, __sk_common.skc_prot));
	if (in && !inferred) {
		e->orphans = in->orphans;
		e->max_orphans = in->max_orphans;
		e->exact |= in->exact & (FIELD_ORPHANS | FIELD_MAX_ORPHANS);
		e->derived |= in->derived & (FIELD_ORPHANS | FIELD_MAX_ORPHANS);
	} else {
		fill_orphans(e, sk);
	}
	e->shift = shift;
	e->caller = caller;
	if (inferred) {
		e->verdict |= VERDICT_RESET;
		e->derived |= FIELD_SHIFT;
		e->exact |= FIELD_CALLER;
	} else {
		e->exact |= FIELD_SHIFT | FIELD_CALLER;
	}
	fill_verdict(e);
	count_oom(e);
	emit(e);
out:
	if (in && !inferred)
		bpf_map_delete_elem(&oom_inputs, &tid);
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
	__u8 caller;
	__u64 tid;

	count(CNT_OOM_CALLS);
	caller = caller_of(sk, shift);
	if (!ret) {
		tid = bpf_get_current_pid_tgid();
		bpf_map_delete_elem(&oom_inputs, &tid);
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
	__u64 tid = bpf_get_current_pid_tgid();
	struct entry_args a = { .sk = (__u64)sk, .arg = shift };

	bpf_map_update_elem(&entry, &tid, &a, BPF_ANY);
	note_oom_inputs(sk);
	return 0;
}

SEC("kretprobe/tcp_check_oom")
int BPF_KRETPROBE(check_oom_kretprobe, bool ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct entry_args *a = bpf_map_lookup_elem(&entry, &tid);
	struct entry_args args;
	__u8 caller;

	if (!a)
		return 0;
	args = *a;
	bpf_map_delete_elem(&entry, &tid);
	count(CNT_OOM_CALLS);
	caller = caller_of((const struct sock *)args.sk, (int)args.arg);
	if (!ret) {
		bpf_map_delete_elem(&oom_inputs, &tid);
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
 * Tracepoint tier: the probe timer always passes do_reset = true. The
 * retransmit timer passes alive || !retransmits_timed_out(); while the
 * backed-off RTO is below rto_max the socket is "alive" and do_reset is true.
 * Past that the term depends on retransmits_timed_out(), not recomputed here.
 */
static __always_inline int do_reset_of(const struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	__u32 rto_max = 120 * hz;
	__u64 rto;

	if (BPF_CORE_READ(tp, packets_out) == 0)
		return 1;	/* probe timer */
	if (bpf_core_field_exists(icsk->icsk_rto_max))
		rto_max = BPF_CORE_READ(icsk, icsk_rto_max);
	rto = (__u64)BPF_CORE_READ(icsk, icsk_rto) << (BPF_CORE_READ(icsk, icsk_backoff) & 63);
	if (rto < rto_max)
		return 1;	/* alive */
	return -1;
}

/* Kernels without tcp_check_oom: tcp_out_of_resources(sk, do_reset) itself.
 * It is static and may be inlined: the plan checks kallsyms first. */
SEC("kprobe/tcp_out_of_resources")
int BPF_KPROBE(out_of_resources_kprobe, struct sock *sk, bool do_reset)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct entry_args a = { .sk = (__u64)sk, .arg = do_reset };

	bpf_map_update_elem(&entry, &tid, &a, BPF_ANY);
	return 0;
}

SEC("kretprobe/tcp_out_of_resources")
int BPF_KRETPROBE(out_of_resources_kretprobe, int ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct entry_args *a = bpf_map_lookup_elem(&entry, &tid);
	struct tcpoom_event ev, *e = &ev;
	const struct sock *sk;
	bool lower;
	int do_reset;

	if (!a)
		return 0;
	sk = (const struct sock *)a->sk;
	do_reset = a->arg;
	bpf_map_delete_elem(&entry, &tid);
	count(CNT_OOM_CALLS);
	if (!ret || !pass_filters(sk))
		return 0;
	init_event(e, FAMILY_OOM_CHECK, METHOD_KPROBE);
	fill_socket(e, sk);
	fill_memory(e, BPF_CORE_READ(sk, __sk_common.skc_prot));
	fill_orphans(e, sk);
	e->shift = timer_shift(sk, do_reset, &lower);
	e->derived |= FIELD_SHIFT;
	e->caller = CALLER_TIMER;
	e->exact |= FIELD_CALLER;
	fill_verdict(e);
	count_oom(e);
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
	__u32 zero = 0;
	__u64 *note = bpf_map_lookup_elem(&last_reset, &zero);
	bool lower = false;

	if (note)
		*note = (__u64)sk;
	if (!oom_from_resets || !sk)
		return 0;
	if (!bpf_core_enum_value_exists(enum sk_rst_reason, SK_RST_REASON_TCP_ABORT_ON_MEMORY) ||
	    reason != bpf_core_enum_value(enum sk_rst_reason, SK_RST_REASON_TCP_ABORT_ON_MEMORY))
		return 0;
	if (!pass_filters(sk))
		return 0;
	init_event(e, FAMILY_OOM_CHECK, method);
	fill_socket(e, sk);
	fill_memory(e, BPF_CORE_READ(sk, __sk_common.skc_prot));
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
	fill_verdict(e);
	count_oom(e);
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

/* Before 6.10 the tracepoint has no reason: only the reset note is taken,
 * for the TIME_WAIT inference below. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(reset_note_btf, const struct sock *sk)
{
	__u32 zero = 0;
	__u64 *note = bpf_map_lookup_elem(&last_reset, &zero);

	if (note)
		*note = (__u64)sk;
	return 0;
}

/* -------------------------------------------------------------- tw_overflow */

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

	count(CNT_TW_OVERFLOW);
	init_event(e, FAMILY_TW_OVERFLOW, method);
	fill_socket(e, sk);
	read_death_row(dr, &e->tw_count, &e->max_tw_buckets);
	e->exact |= FIELD_TW_COUNT | FIELD_MAX_TW;
	fill_memory(e, BPF_CORE_READ(sk, __sk_common.skc_prot));
	if (inferred)
		e->derived |= FIELD_VERDICT;
	else
		e->exact |= FIELD_VERDICT;
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
	__u64 tid = bpf_get_current_pid_tgid();
	struct entry_args a = { .sk = (__u64)sk, .arg = (__u64)dr };

	bpf_map_update_elem(&entry, &tid, &a, BPF_ANY);
	return 0;
}

SEC("kretprobe/inet_twsk_alloc")
int BPF_KRETPROBE(twsk_alloc_kretprobe, void *ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct entry_args *a = bpf_map_lookup_elem(&entry, &tid);
	struct entry_args args;

	if (!a)
		return 0;
	args = *a;
	bpf_map_delete_elem(&entry, &tid);
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

/* --------------------------------------------------------------- mem_exceed */

/* __sk_mem_raise_allocated() refused memory at tcp_mem[2]: 3.1+; `kind`
 * (SK_MEM_SEND 0 / SK_MEM_RECV 1) since 4.19. Fires for every protocol. */
static __always_inline int on_exceed(struct sock *sk, struct proto *prot, long allocated,
				     int kind, __u8 method)
{
	struct tcpoom_event ev, *e = &ev;

	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (!pass_filters(sk))
		return 0;
	count(CNT_MEM_EXCEED);
	count(kind ? CNT_MEM_RECV : CNT_MEM_SEND);
	init_event(e, FAMILY_MEM_EXCEED, method);
	fill_socket(e, sk);
	fill_memory(e, prot);
	/* the tracepoint's own figure: what the allocation would have made it */
	e->memory_allocated = allocated;
	e->verdict = kind ? VERDICT_RECV : VERDICT_SEND;
	e->exact |= FIELD_MEMORY | FIELD_VERDICT;
	emit(e);
	return 0;
}

SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(exceed_btf, struct sock *sk, struct proto *prot, long allocated, int kind)
{
	return on_exceed(sk, prot, allocated, kind, METHOD_TP_BTF);
}

SEC("raw_tp/sock_exceed_buf_limit")
int BPF_PROG(exceed_raw, struct sock *sk, struct proto *prot, long allocated, int kind)
{
	return on_exceed(sk, prot, allocated, kind, METHOD_RAW_TP);
}

/* ----------------------------------------------------------------- pressure */

/*
 * tcp_enter_memory_pressure() is called on every allocation above tcp_mem[1]
 * but only the first (cmpxchg 0 -> jiffies, 4.13+) enters; likewise
 * tcp_leave_memory_pressure() on every allocation below tcp_mem[0]. Report
 * only real transitions, read from the flag itself, and leave the hot path
 * after one load.
 */
static __always_inline int on_pressure(struct sock *sk, bool enter, __u8 method)
{
	unsigned long *flag = BPF_CORE_READ(sk, __sk_common.skc_prot, memory_pressure);
	unsigned long since = 0;
	struct tcpoom_event ev, *e = &ev;

	if (!flag || bpf_probe_read_kernel(&since, sizeof(since), flag))
		return 0;
	if (enter ? since != 0 : since == 0)
		return 0;
	if (!pass_filters(sk))
		return 0;
	count(enter ? CNT_PRESSURE_ENTER : CNT_PRESSURE_LEAVE);
	init_event(e, FAMILY_PRESSURE, method);
	fill_socket(e, sk);
	fill_memory(e, BPF_CORE_READ(sk, __sk_common.skc_prot));
	e->pressure_since = since;
	e->verdict = enter ? VERDICT_ENTER : VERDICT_LEAVE;
	e->exact |= FIELD_VERDICT;
	emit(e);
	return 0;
}

SEC("fentry/tcp_enter_memory_pressure")
int BPF_PROG(enter_pressure_fentry, struct sock *sk)
{
	return on_pressure(sk, true, METHOD_FENTRY);
}

SEC("fentry/tcp_leave_memory_pressure")
int BPF_PROG(leave_pressure_fentry, struct sock *sk)
{
	return on_pressure(sk, false, METHOD_FENTRY);
}

SEC("kprobe/tcp_enter_memory_pressure")
int BPF_KPROBE(enter_pressure_kprobe, struct sock *sk)
{
	return on_pressure(sk, true, METHOD_KPROBE);
}

SEC("kprobe/tcp_leave_memory_pressure")
int BPF_KPROBE(leave_pressure_kprobe, struct sock *sk)
{
	return on_pressure(sk, false, METHOD_KPROBE);
}

/* ---------------------------------------------------------------- benchmark */

/*
 * A synthetic event source for benchmarks (scripts/bench_*.py), never part of
 * a probe plan: each getpid() of the benchmark driver makes bench_batch
 * records of the real layout, so the user-space pipeline can be driven at
 * millions of events per second on demand. They go through the same counters
 * and ring buffer as real events.
 */
const volatile __u32 bench_tgid = 0;
const volatile __u32 bench_batch = 1000;

static long bench_one(__u32 i, void *ctx)
{
	struct tcpoom_event *e = ctx;

	e->ts_ns = bpf_ktime_get_ns();
	e->shift = i & 3;
	e->orphans = i & 1023;
	e->sport = 1024 + (i & 4095);
	count(CNT_OOM_CHECK);
	emit(e);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_sys_enter, struct pt_regs *regs, long id)
{
	struct tcpoom_event e;

	if (id != 39 /* __NR_getpid, x86_64 */ || (bpf_get_current_pid_tgid() >> 32) != bench_tgid)
		return 0;
	init_event(&e, FAMILY_OOM_CHECK, METHOD_TP_BTF);
	e.af = AF_INET;
	e.dport = 5000;
	e.max_orphans = 1024;
	e.memory_allocated = 1000;
	e.tcp_mem[0] = 100;
	e.tcp_mem[1] = 200;
	e.tcp_mem[2] = 400;
	e.verdict = VERDICT_ORPHANS | VERDICT_KILLED;
	e.caller = CALLER_TIMER;
	bpf_loop(bench_batch, bench_one, &e, 0);
	return 0;
}

/*
 * The same synthetic records through a perf event array, one
 * bpf_perf_event_output() each, as bcc's tools emit theirs: the reference
 * pipeline of the benchmarks (scripts/bench_reference.py reads it with a
 * Python callback per event). Never part of a probe plan.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} bench_perf SEC(".maps");

struct bench_perf_ctx {
	void *prog_ctx;
	struct tcpoom_event e;
};

static long bench_perf_one(__u32 i, void *ctx)
{
	struct bench_perf_ctx *c = ctx;

	c->e.ts_ns = bpf_ktime_get_ns();
	c->e.shift = i & 3;
	c->e.orphans = i & 1023;
	c->e.sport = 1024 + (i & 4095);
	count(CNT_OOM_CHECK);
	if (bpf_perf_event_output(c->prog_ctx, &bench_perf, BPF_F_CURRENT_CPU, &c->e, sizeof(c->e)))
		count(CNT_LOST_BASE + FAMILY_OOM_CHECK);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_perf_sys_enter, struct pt_regs *regs, long id)
{
	struct bench_perf_ctx c = { .prog_ctx = ctx };

	if (id != 39 /* __NR_getpid, x86_64 */ || (bpf_get_current_pid_tgid() >> 32) != bench_tgid)
		return 0;
	init_event(&c.e, FAMILY_OOM_CHECK, METHOD_TP_BTF);
	c.e.af = AF_INET;
	c.e.dport = 5000;
	c.e.max_orphans = 1024;
	c.e.memory_allocated = 1000;
	c.e.tcp_mem[0] = 100;
	c.e.tcp_mem[1] = 200;
	c.e.tcp_mem[2] = 400;
	c.e.verdict = VERDICT_ORPHANS | VERDICT_KILLED;
	c.e.caller = CALLER_TIMER;
	bpf_loop(bench_batch, bench_perf_one, &c, 0);
	return 0;
}
