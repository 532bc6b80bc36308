// SPDX-License-Identifier: GPL-2.0
/*
 * tcpoom for the bcc engine: kernels without BTF that have their headers
 * installed. bcc compiles this text at run time against
 * /lib/modules/$(uname -r)/build, so struct offsets come from the running
 * kernel's own headers instead of CO-RE relocations, and version differences
 * are settled by LINUX_VERSION_CODE. Kernels 5.8+ (BPF_RINGBUF_OUTPUT); run
 * on Debian's 6.1 (tests/test_vm_bcc.py), the 5.8-5.18 branches compiled only.
 *
 * It writes the same struct tcpoom_event (tcpoom.h, included as is) into a
 * BPF ring buffer and counts into the same per-CPU counter slots as
 * tcpoom.bpf.c, so everything after the ring buffer is shared; the verdicts
 * and the counting are verdict.h, included by both. The methods are
 * those of the CO-RE kprobe tier:
 *
 *   oom_check    kprobe+kretprobe tcp_check_oom, kprobe+kretprobe tcp_close
 *                or __tcp_close (which path asked), kprobe
 *                tcp_send_active_reset (close-path aborts whose tcp_check_oom
 *                call was inlined)
 *   tw_overflow  kprobe+kretprobe inet_twsk_alloc
 *   mem_exceed   raw tracepoint sock_exceed_buf_limit (4.19+: sk, prot,
 *                allocated, kind; the classic tracepoint has no socket)
 *   pressure     kprobes tcp_enter_memory_pressure, tcp_leave_memory_pressure
 *
 * Set with -D by tracer/bcc_engine.py: FILTER_NETNS, FILTER_PID, FILTER_PORT,
 * RINGBUF_PAGES, WAKEUP_EVERY, TCPOOM_EVENT_SIZE, and, where /proc/kallsyms lists them (CONFIG_KALLSYMS_ALL),
 * ORPHAN_CACHE_ADDR and MAX_ORPHANS_ADDR (0 where it does not).
 * Only the functions user space attaches are loaded.
 */
#include <uapi/linux/ptrace.h>
#include <linux/version.h>
#include <net/sock.h>
#include <linux/tcp.h>		/* struct tcp_sock; net/tcp.h would cost 15% more compile time */
#include <net/tcp_states.h>
#include <net/inet_timewait_sock.h>
#include "verdict.h"	/* the logic shared with tcpoom.bpf.c; includes tcpoom.h */

/* Read one kernel value of `type` at `addr`; 0 when the read faults. bcc
 * rewrites plain dereferences of probe arguments only, and socket pointers
 * here also come out of maps: every read is spelled out. */
#define RD(type, addr) ({ type __v = 0; bpf_probe_read_kernel(&__v, sizeof(__v), (const void *)(addr)); __v; })

/* the layout user space decodes (tracer/events.py EVENT_SIZE, passed in) */
_Static_assert(sizeof(struct tcpoom_event) == TCPOOM_EVENT_SIZE, "struct tcpoom_event layout");

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(counters, struct tcpoom_counters, 1);

/* The structs of these maps: verdict.h. tid -> the socket tcp_close() is
 * closing; (tid, cpu) -> arguments saved at a kprobe for its kretprobe;
 * (tid, cpu) -> the orphan and memory figures as tcp_check_oom found them on
 * entry. Keyed by CPU as well: softirqs on idle CPUs all run as pid 0. */
BPF_HASH(closing, u64, struct closing_sk, 16384);

BPF_HASH(entry, struct entry_key, struct entry_args, 16384);

BPF_HASH(oom_inputs, struct entry_key, struct oom_inputs, 16384);

/* pressure: (tid, cpu) -> a tcp_enter_memory_pressure call that found the flag
 * 0; the episodes already reported (verdict.h, PRESSURE_LEFT) */
BPF_HASH(pressure_calls, struct entry_key, struct pressure_call, 1024);
BPF_TABLE("lru_hash", u64, u8, episodes, 1024);

/* A nested call on the same task and CPU took the slot: its arguments win,
 * the outer return finds none and counts itself if it was an event. */
static __always_inline void keep_entry(struct entry_key *k, struct entry_args *a)
{
	if (entry.insert(k, a))
		entry.update(k, a);
}

static __always_inline struct tcpoom_counters *cpu_counters(void)
{
	u32 zero = 0;

	return counters.lookup(&zero);
}

static __always_inline void count(u32 slot)
{
	tally(cpu_counters(), slot);
}

/* sk_protocol: a plain u16 from 5.6 (the engine needs 5.8+, for the ring
 * buffer). */
static __always_inline bool is_tcp(struct sock *sk)
{
	return RD(u16, &sk->sk_protocol) == IPPROTO_TCP;
}

static __always_inline u32 sk_netns(struct sock *sk)
{
	struct net *net = RD(struct net *, &sk->__sk_common.skc_net.net);

	return net ? RD(u32, &net->ns.inum) : 0;
}

/* The local port: tcp_set_state(TCP_CLOSE) zeroes skc_num (the port is
 * released) before some of our hooks run; inet_sport keeps it. */
static __always_inline u16 local_port(struct sock *sk)
{
	u16 num = RD(u16, &sk->__sk_common.skc_num);

	if (num)
		return num;
	return ntohs(RD(u16, &((struct inet_sock *)sk)->inet_sport));
}

/* Filters first; a family counts only what passes them, so its counter
 * compares with the filtered namespace's own TcpExt counters. */
static __always_inline bool pass_filters(struct sock *sk)
{
	if (FILTER_NETNS && sk && sk_netns(sk) != FILTER_NETNS)
		goto out;
	if (FILTER_PID && (bpf_get_current_pid_tgid() >> 32) != FILTER_PID)
		goto out;
	if (FILTER_PORT && sk) {
		u16 sport = local_port(sk);
		u16 dport = ntohs(RD(u16, &sk->__sk_common.skc_dport));

		if (sport != FILTER_PORT && dport != FILTER_PORT)
			goto out;
	}
	return true;
out:
	count(CNT_FILTERED);
	return false;
}

/* Wakeups, as in tcpoom.bpf.c's emit(): no wakeup per record, the consumer
 * reads on a timer and is woken early only when the ring fills. bcc 0.26's
 * ring buffer table has no ringbuf_query method, so the fill is approximated:
 * every WAKEUP_EVERY-th record a CPU writes forces a wakeup (a quarter of the
 * ring shared among the CPUs, set by tracer/bcc_engine.py) and the others go
 * in silently; the consumer ignores a wakeup while the ring is below the mark. */
BPF_PERCPU_ARRAY(wake_count, u64, 1);

/* Counters are bumped before this: a full ring buffer loses the detail only. */
static __always_inline void emit(struct tcpoom_event *e)
{
	u32 zero = 0;
	u64 flags = BPF_RB_NO_WAKEUP;
	u64 *written = wake_count.lookup(&zero);

	if (written && ++*written >= WAKEUP_EVERY) {
		*written = 0;
		flags = BPF_RB_FORCE_WAKEUP;
	}
	if (events.ringbuf_output(e, sizeof(*e), flags))
		count(CNT_LOST_BASE + e->family);
}

static __always_inline void fill_socket(struct tcpoom_event *e, struct sock *sk)
{
	e->skaddr = (u64)sk;
	e->netns = sk_netns(sk);
	e->af = RD(u16, &sk->__sk_common.skc_family);
	e->sport = local_port(sk);
	e->dport = ntohs(RD(u16, &sk->__sk_common.skc_dport));
	e->state = RD(u8, &sk->__sk_common.skc_state);
	if (e->af == AF_INET) {
		bpf_probe_read_kernel(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_probe_read_kernel(e->daddr, 4, &sk->__sk_common.skc_daddr);
	}
#if IS_ENABLED(CONFIG_IPV6)
	else if (e->af == AF_INET6) {
		bpf_probe_read_kernel(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
#endif
	e->wmem_queued = RD(int, &sk->sk_wmem_queued);
	e->rmem_alloc = RD(int, &sk->sk_backlog.rmem_alloc.counter);
	e->sndbuf = RD(int, &sk->sk_sndbuf);
	e->rcvbuf = RD(int, &sk->sk_rcvbuf);
	e->exact |= FIELD_SOCKET;
}

/* memory_allocated against tcp_mem, through the socket's proto as the kernel
 * compares them. */
static __always_inline void fill_memory(struct tcpoom_event *e, struct proto *prot)
{
	atomic_long_t *allocated = RD(atomic_long_t *, &prot->memory_allocated);

	read_memory(e, allocated, RD(long *, &prot->sysctl_mem),
		    RD(unsigned long *, &prot->memory_pressure));
}

/* A new event of a socket: who, where, and the memory figures of its proto. */
static __always_inline void start_event(struct tcpoom_event *e, u8 family, u8 method,
					struct sock *sk, struct proto *prot)
{
	init_event(e, family, method);
	fill_socket(e, sk);
	fill_memory(e, prot);
}

/* The orphan count and limit where the kernel lets us read them. */
static __always_inline void fill_orphans(struct tcpoom_event *e, struct sock *sk)
{
	if (read_orphans(e, MAX_ORPHANS_ADDR, ORPHAN_CACHE_ADDR))
		return;
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 0, 0)
	/* up to 5.15.15: a percpu_counter in tcp_prot; the kernel reads its
	 * count first and sums the per-CPU parts only above the limit. 5.15.16+
	 * stable made it a per-CPU unsigned int: the headers' own type decides. */
	if (__builtin_types_compatible_p(typeof(((struct proto *)0)->orphan_count),
					 struct percpu_counter *)) {
		struct proto *prot = RD(struct proto *, &sk->__sk_common.skc_prot);
		struct percpu_counter *pcc = RD(struct percpu_counter *, &prot->orphan_count);
		s64 count = 0;

		if (pcc && !bpf_probe_read_kernel(&count, sizeof(count), &pcc->count)) {
			e->orphans = count < 0 ? 0 : count;
			e->derived |= FIELD_ORPHANS;
		}
	}
#endif
}

/* ---------------------------------------------------------------- oom_check */

/* The close path always passes shift 0 and runs in the closing task; a timer
 * handler deferred to release_sock() at the end of tcp_close() runs there too,
 * but with the socket's own shift. */
static __always_inline u8 caller_of(struct sock *sk, int shift)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct closing_sk *c = closing.lookup(&tid);

	if (!c || c->sk != (u64)sk || shift != 0)
		return CALLER_TIMER;
	c->oom_seen = 1;
	return CALLER_CLOSE;
}

/* `inferred`: seen at the close path's reset, tcp_check_oom inlined there. */
static __always_inline int report_check_oom(struct sock *sk, int shift, u8 caller, bool inferred)
{
	struct tcpoom_event ev = {}, *e = &ev;
	struct entry_key key = entry_key_now();
	struct oom_inputs *in = oom_inputs.lookup(&key);

	if (!pass_filters(sk))
		goto out;
	start_event(e, FAMILY_OOM_CHECK, METHOD_KPROBE, sk, RD(struct proto *, &sk->__sk_common.skc_prot));
	if (in && !inferred)
		use_oom_inputs(e, in);
	else
		fill_orphans(e, sk);
	/* SOCK_MIN_SNDBUF: from the running kernel's headers */
	decide_oom(e, shift, caller, inferred, SOCK_MIN_SNDBUF);
	tally_oom(cpu_counters(), e);
	emit(e);
out:
	if (in && !inferred)
		oom_inputs.delete(&key);
	return 0;
}

/* A close in progress on this task. tcp_close() is sk_prot->close, never
 * inlined; __tcp_close() (5.15+) is hooked only where tcp_close is not in
 * kallsyms: kprobes do not nest (see the plan's blind spot), so the fewer
 * handlers run in a task, the fewer softirq calls are missed. */
static __always_inline int close_enter(struct sock *sk)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct closing_sk *c = closing.lookup(&tid);
	struct closing_sk v = { .sk = (u64)sk };

	if (c && c->sk == (u64)sk)	/* tcp_close -> __tcp_close */
		return 0;
	closing.update(&tid, &v);
	return 0;
}

static __always_inline int close_exit(void)
{
	u64 tid = bpf_get_current_pid_tgid();

	closing.delete(&tid);
	return 0;
}

int tcp_close_enter_kprobe(struct pt_regs *ctx, struct sock *sk)
{
	return close_enter(sk);
}

int tcp_close_exit_kretprobe(struct pt_regs *ctx)
{
	return close_exit();
}

int close_enter_kprobe(struct pt_regs *ctx, struct sock *sk)
{
	return close_enter(sk);
}

int close_exit_kretprobe(struct pt_regs *ctx)
{
	return close_exit();
}

int check_oom_kprobe(struct pt_regs *ctx, struct sock *sk, int shift)
{
	struct entry_key key = entry_key_now();
	struct entry_args a = { .sk = (u64)sk, .arg = (u64)shift };
	struct tcpoom_event tmp = {};
	struct oom_inputs in = {};

	keep_entry(&key, &a);
	tmp.orphans = tmp.max_orphans = -1;
	tmp.memory_allocated = tmp.pressure_since = -1;
	tmp.tcp_mem[0] = tmp.tcp_mem[1] = tmp.tcp_mem[2] = -1;
	fill_orphans(&tmp, sk);
	fill_memory(&tmp, RD(struct proto *, &sk->__sk_common.skc_prot));
	keep_oom_inputs(&in, &tmp);
	oom_inputs.update(&key, &in);
	return 0;
}

int check_oom_kretprobe(struct pt_regs *ctx)
{
	struct entry_key key = entry_key_now();
	struct entry_args *a = entry.lookup(&key);
	struct entry_args args;
	bool killed = PT_REGS_RC(ctx) & 0xff;	/* bool in al */
	u8 caller;

	if (!a) {
		if (killed)
			count(CNT_UNPAIRED_BASE + FAMILY_OOM_CHECK);
		return 0;
	}
	args = *a;
	entry.delete(&key);
	count(CNT_OOM_CALLS);
	caller = caller_of((struct sock *)args.sk, (int)args.arg);
	if (!killed) {
		oom_inputs.delete(&key);
		return 0;
	}
	return report_check_oom((struct sock *)args.sk, (int)args.arg, caller, false);
}

/* Close-path aborts whose tcp_check_oom() call was inlined into the close
 * (same file; Debian's builds call it out of line, others need not): after
 * sock_orphan() (SOCK_DEAD) and tcp_set_state(TCP_CLOSE) the close sends an
 * active reset in two cases only, a linger abort from FIN_WAIT2 with the FIN
 * acked (TCPAbortOnLinger), or tcp_check_oom(sk, 0) said yes. */
int active_reset_kprobe(struct pt_regs *ctx, struct sock *sk)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct closing_sk *c = closing.lookup(&tid);
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	unsigned long flags;

	if (!c || c->sk != (u64)sk || c->oom_seen)
		return 0;
	flags = RD(unsigned long, &sk->__sk_common.skc_flags);
	if (RD(u8, &sk->__sk_common.skc_state) != TCP_CLOSE || !(flags & (1UL << SOCK_DEAD)))
		return 0;
	if (RD(int, &tp->linger2) < 0 && RD(u32, &tp->snd_una) == RD(u32, &tp->write_seq))
		return 0;	/* TCPAbortOnLinger */
	c->oom_seen = 1;
	return report_check_oom(sk, 0, CALLER_CLOSE, true);
}

/* -------------------------------------------------------------- tw_overflow */

/* inet_twsk_alloc(sk, dr, state) returns NULL at the bucket limit (or on a
 * slab failure): tcp_time_wait() then counts TCPTimeWaitOverflow and closes
 * the socket without TIME_WAIT. The death row is an argument since 4.1. */
int twsk_alloc_kprobe(struct pt_regs *ctx, struct sock *sk, void *dr)
{
	struct entry_key key = entry_key_now();
	struct entry_args a = { .sk = (u64)sk, .arg = (u64)dr };

	keep_entry(&key, &a);
	return 0;
}

int twsk_alloc_kretprobe(struct pt_regs *ctx)
{
	struct entry_key key = entry_key_now();
	struct entry_args *a = entry.lookup(&key);
	struct inet_timewait_death_row *dr;
	struct tcpoom_event ev = {}, *e = &ev;
	struct sock *sk;
	int tw_count;

	if (!a) {
		if (!PT_REGS_RC(ctx))
			count(CNT_UNPAIRED_BASE + FAMILY_TW_OVERFLOW);
		return 0;
	}
	sk = (struct sock *)a->sk;
	dr = (struct inet_timewait_death_row *)a->arg;
	entry.delete(&key);
	if (PT_REGS_RC(ctx))
		return 0;
	/* DCCP (dccp_time_wait) allocates from it too */
	if (!is_tcp(sk) || !pass_filters(sk))
		return 0;
	count(CNT_TW_OVERFLOW);
	start_event(e, FAMILY_TW_OVERFLOW, METHOD_KPROBE, sk,
		    RD(struct proto *, &sk->__sk_common.skc_prot));
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 19, 0)
	/* refcount_t biased by one (5.19+) */
	tw_count = RD(int, &dr->tw_refcount.refs.counter) - 1;
#else
	tw_count = RD(int, &dr->tw_count.counter);
#endif
	mark_tw_overflow(e, tw_count, RD(int, &dr->sysctl_max_tw_buckets), false);
	emit(e);
	return 0;
}

/* --------------------------------------------------------------- mem_exceed */

/* __sk_mem_raise_allocated() refused memory at tcp_mem[2]. The raw
 * tracepoint's arguments (4.19+): sk, prot, allocated, kind (SK_MEM_SEND 0,
 * SK_MEM_RECV 1). Fires for every protocol. */
int exceed_raw(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	struct proto *prot = (struct proto *)ctx->args[1];
	long allocated = (long)ctx->args[2];
	int kind = (int)ctx->args[3];
	struct tcpoom_event ev = {}, *e = &ev;

	if (!sk || !is_tcp(sk))
		return 0;
	if (!pass_filters(sk))
		return 0;
	tally_exceed(cpu_counters(), kind);
	start_event(e, FAMILY_MEM_EXCEED, METHOD_RAW_TP, sk, prot);
	mark_exceed(e, allocated, kind);
	emit(e);
	return 0;
}

/* ----------------------------------------------------------------- pressure */

static __always_inline int report_pressure(struct sock *sk, unsigned long since, bool enter,
					   struct pressure_call *c)
{
	struct tcpoom_event ev = {}, *e = &ev;

	if (!pass_filters(sk))
		return 0;
	count(enter ? CNT_PRESSURE_ENTER : CNT_PRESSURE_LEAVE);
	start_event(e, FAMILY_PRESSURE, METHOD_KPROBE, sk, RD(struct proto *, &sk->__sk_common.skc_prot));
	mark_pressure(e, since, enter);
	if (c)
		mark_pressure_cause(e, c);
	emit(e);
	return 0;
}

/* As tcpoom.bpf.c's pressure.bpf.h: an enter that found the flag 0 keeps
 * memory_allocated and tcp_mem[1] for its return, which reports the episode
 * once (an atomic insert of the flag's new value); a leave that finds the flag
 * set reports at entry, once per episode. */
int enter_pressure_kprobe(struct pt_regs *ctx, struct sock *sk)
{
	struct proto *prot = RD(struct proto *, &sk->__sk_common.skc_prot);
	struct pressure_call c = { .sk = (u64)sk, .allocated = -1, .tcp_mem1 = -1 };
	atomic_long_t *allocated;
	struct entry_key key;
	unsigned long since;
	long *mem;
	long v;

	if (!pressure_changes(RD(unsigned long *, &prot->memory_pressure), true, &since))
		return 0;
	allocated = RD(atomic_long_t *, &prot->memory_allocated);
	if (allocated && !bpf_probe_read_kernel(&v, sizeof(v), &allocated->counter))
		c.allocated = v < 0 ? 0 : v;
	mem = RD(long *, &prot->sysctl_mem);
	if (mem && !bpf_probe_read_kernel(&v, sizeof(v), &mem[1]))
		c.tcp_mem1 = v;
	key = entry_key_now();
	pressure_calls.update(&key, &c);
	return 0;
}

int enter_pressure_kretprobe(struct pt_regs *ctx)
{
	struct entry_key key = entry_key_now();
	struct pressure_call *p = pressure_calls.lookup(&key);
	struct pressure_call c;
	struct proto *prot;
	unsigned long *flag;
	unsigned long v = 0;
	u8 one = 1;
	u64 k;

	if (!p)
		return 0;
	c = *p;
	pressure_calls.delete(&key);
	prot = RD(struct proto *, &((struct sock *)c.sk)->__sk_common.skc_prot);
	flag = RD(unsigned long *, &prot->memory_pressure);
	if (!flag || bpf_probe_read_kernel(&v, sizeof(v), flag) || !v)
		return 0;
	k = v;
	if (episodes.insert(&k, &one))
		return 0;	/* a racer reported this episode */
	return report_pressure((struct sock *)c.sk, v, true, &c);
}

int leave_pressure_kprobe(struct pt_regs *ctx, struct sock *sk)
{
	struct proto *prot = RD(struct proto *, &sk->__sk_common.skc_prot);
	unsigned long since;
	u8 one = 1;
	u64 k;

	if (!pressure_changes(RD(unsigned long *, &prot->memory_pressure), false, &since))
		return 0;
	k = (u64)since | PRESSURE_LEFT;
	if (episodes.insert(&k, &one))
		return 0;
	k = since;
	episodes.delete(&k);
	return report_pressure(sk, since, false, NULL);
}
