// SPDX-License-Identifier: GPL-2.0
/*
 * A synthetic event source for benchmarks (scripts/bench_*.py), never part of
 * a probe plan: each getpid() of the benchmark driver makes bench_batch
 * records of the real layout, so the user-space pipeline can be driven at
 * millions of events per second on demand. They go through the same counters
 * and ring buffer as real events: an object of its own, loaded only for
 * --synthetic-pid, whose events and counters maps the loader points at the
 * production object's (bpf_map__reuse_fd) before load.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

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

/*
 * Varied records, made when the driver calls getppid() instead: a storm as a
 * busy host has it, so the aggregation's constant-column fast path does not
 * apply. Each record is drawn from a hash of its index in a pool:
 * 256 processes (pids, 128 comms, 128 cgroups, 64 memory cgroups, 4 uids) in
 * 8 network namespaces, 4096 connections (512 peers, 8 service ports, one in
 * 16 IPv6), and every family in plausible proportions with the fields its
 * real program fills on the tracepoint tier.
 */
#define BENCH_NETNS0	4026531840u	/* the first namespace inode a host hands out */
#define BENCH_TCP_MEM0	191000		/* tcp_mem of a ~24 GiB host, pages */
#define BENCH_TCP_MEM1	254000
#define BENCH_TCP_MEM2	382000
#define BENCH_JIFFIES	4295000000ll	/* a pressure episode's start, jiffies */

/* 6 letters each; two digits follow */
const char bench_names[8][8] = {
	"nginx-", "envoy-", "java-w", "redis-", "pgsql-", "haprox", "python", "curl-c",
};
const __u16 bench_ports[8] = { 443, 80, 8080, 5432, 6379, 9092, 3306, 11211 };
/* tcp_max_tw_buckets per namespace: the default of a large host, small
 * containers, a lab's 1 */
const __s32 bench_max_tw[8] = { 262144, 4096, 4096, 16384, 1, 262144, 8192, 32768 };

static __always_inline __u64 bench_mix(__u64 x)
{
	x *= 0x9E3779B97F4A7C15ull;
	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 32;
	return x;
}

static __always_inline void bench_who(struct tcpoom_event *e, __u32 who, __u64 h)
{
	__u32 n = who >> 4;	/* 0..15 */

	e->pid = 2000 + who * 7;
	e->tid = e->pid + ((h >> 40) & 3);
	__builtin_memcpy(e->comm, bench_names[(who >> 1) & 7], 8);
	e->comm[6] = '0' + n / 10;
	e->comm[7] = '0' + n % 10;
	e->netns = BENCH_NETNS0 + ((who >> 5) & 7);
	e->cgroup = 1000 + (who >> 1);
	e->sk_cgroup = e->cgroup;
	e->memcg = 20000 + (who >> 2);
	e->sk_uid = 1000 + (who >> 6);
	/* most sockets are used by their owner; some were handed over (a
	 * pre-fork server), some are closed from softirq with nobody noted */
	switch ((h >> 42) & 7) {
	case 0:
		e->owner_fidelity = OWNER_LAST_KNOWN;
		e->owner_pid = 2000 + (who ^ 1) * 7;
		break;
	case 1:
		e->owner_fidelity = OWNER_CONTEXT;
		e->owner_pid = e->pid;
		break;
	default:
		e->owner_fidelity = OWNER_EXACT;
		e->owner_pid = e->pid;
	}
	e->owner_uid = e->sk_uid;
	e->owner_cgroup = e->cgroup;
	__builtin_memcpy(e->owner_comm, e->comm, sizeof(e->owner_comm));
}

static __always_inline void bench_socket(struct tcpoom_event *e, __u32 conn, __u32 who, __u64 h)
{
	__u32 peer = conn & 511;

	e->skaddr = 0xffff888100000000ull + conn * 2304ull + who * 0x1000000ull;
	e->sport = 32768 + conn * 7;
	e->dport = bench_ports[(conn >> 9) & 7];
	if ((conn & 15) == 15) {
		e->af = AF_INET6;
		e->saddr[0] = 0xfd;
		e->saddr[15] = 1 + ((who >> 5) & 7);
		e->daddr[0] = 0xfd;
		e->daddr[1] = 1;
		e->daddr[14] = peer >> 8;
		e->daddr[15] = peer & 255;
	} else {
		e->af = AF_INET;
		e->saddr[0] = 10;
		e->saddr[1] = (who >> 5) & 7;
		e->saddr[3] = 1;
		e->daddr[0] = 172;
		e->daddr[1] = 16;
		e->daddr[2] = peer >> 8;
		e->daddr[3] = peer & 255;
	}
	e->wmem_queued = ((h >> 28) & 63) * 4096;
	e->rmem_alloc = ((h >> 34) & 31) * 2304;
	e->sndbuf = 87040 << ((h >> 46) & 3);
	e->rcvbuf = 131072 << ((h >> 48) & 3);
	e->memory_allocated = BENCH_TCP_MEM1 + ((h >> 50) & 16383) * 8;
	e->pressure_since = e->memory_allocated > BENCH_TCP_MEM1 + 65536 ? BENCH_JIFFIES : 0;
}

/* Record number i of the pool, from the template every record shares. */
static __always_inline void bench_build(struct tcpoom_event *e, const struct tcpoom_event *base, __u64 h)
{
	__u32 pick = h & 255, who = (h >> 8) & 255, conn = (h >> 16) & 4095;

	__builtin_memcpy(e, base, sizeof(*e));
	bench_who(e, who, h);
	bench_socket(e, conn, who, h);
	if (pick < 128) {
		/* half: TIME_WAIT overflows, inferred at inet_sock_set_state */
		e->family = FAMILY_TW_OVERFLOW;
		e->state = (h >> 52) & 3 ? TCP_FIN_WAIT2 : TCP_CLOSING;
		e->max_tw_buckets = bench_max_tw[(who >> 5) & 7];
		e->tw_count = e->max_tw_buckets;
		e->exact |= FIELD_TW_COUNT | FIELD_MAX_TW;
		e->derived |= FIELD_VERDICT;
	} else if (pick < 208) {
		/* orphans killed: at close (shift 0) or by the retransmit timer
		 * (shift 1 or more after backoff); one in eight for memory */
		__u32 r = (h >> 52) & 15;

		e->family = FAMILY_OOM_CHECK;
		e->state = r & 1 ? TCP_FIN_WAIT1 : TCP_LAST_ACK;
		e->caller = r & 2 ? CALLER_TIMER : CALLER_CLOSE;
		e->shift = e->caller == CALLER_TIMER ? 1 + ((r >> 2) & 1) : 0;
		e->max_orphans = 65536;
		e->orphans = (65536 >> e->shift) + ((h >> 56) & 255) + 1;
		e->exact |= FIELD_SHIFT | FIELD_CALLER | FIELD_ORPHANS | FIELD_MAX_ORPHANS;
		e->verdict = VERDICT_KILLED | VERDICT_ORPHANS;
		if (r >= 14) {
			e->memory_allocated = BENCH_TCP_MEM2 + ((h >> 56) & 255);
			e->wmem_queued = 65536;
			e->verdict |= VERDICT_MEMORY;
		}
		if (r & 4)
			e->verdict |= VERDICT_RESET;
		e->derived |= FIELD_VERDICT;
	} else if (pick < 252) {
		/* refusals: past tcp_mem[2], a memory cgroup's limit, or a
		 * fair share under pressure */
		__u32 r = (h >> 52) & 3, kind = (h >> 54) & 1;

		e->family = FAMILY_MEM_EXCEED;
		e->state = TCP_ESTABLISHED;
		e->verdict = kind ? VERDICT_RECV : VERDICT_SEND;
		e->exact |= FIELD_VERDICT;
		e->derived |= FIELD_MEM_CLASS;
		e->memcg_usage = e->memcg_limit = -1;
		if (r == 0) {
			e->mem_class = MEM_CLASS_HARD;
			e->memory_allocated = BENCH_TCP_MEM2 + ((h >> 56) & 255) + 1;
			e->pressure_since = BENCH_JIFFIES;
		} else if (r == 1) {
			e->mem_class = MEM_CLASS_FAIR_SHARE;
			e->pressure_since = BENCH_JIFFIES;
		} else {
			e->mem_class = MEM_CLASS_MEMCG;
			e->memcg_limit = 65536 << ((who >> 2) & 3);
			e->memcg_usage = e->memcg_limit - ((h >> 56) & 15);
		}
	} else {
		/* a few pressure episodes, entered at the limit, and left */
		e->family = FAMILY_PRESSURE;
		e->state = TCP_ESTABLISHED;
		if (h & (1ull << 60)) {
			e->verdict = VERDICT_ENTER | VERDICT_CAUSE_LIMIT;
			e->pressure_since = 0;
			e->memory_allocated = BENCH_TCP_MEM1 + 1 + ((h >> 56) & 15);
		} else {
			e->verdict = VERDICT_LEAVE;
			e->pressure_since = BENCH_JIFFIES;
			e->memory_allocated = BENCH_TCP_MEM0 - 1 - ((h >> 56) & 15);
		}
		e->exact |= FIELD_VERDICT;
	}
}

/*
 * The records are drawn from a pool built once per CPU (BENCH_POOL records,
 * from a hash of their index), so that making one costs the driver's core
 * about what a constant record costs: the driver, not the consumer under
 * test, would otherwise set the highest rate offered.
 */
#define BENCH_POOL 8192

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BENCH_POOL);
	__type(key, __u32);
	__type(value, struct tcpoom_event);
} bench_pool SEC(".maps");

struct bench_varied {
	struct tcpoom_event base;	/* init_event's -1s, the fields every record shares */
	__u64 seq;			/* records made on this CPU */
	__u32 built;			/* records of the pool built */
};

/* one record does not fit the stack beside the constant path's */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_varied);
} bench_scratch SEC(".maps");

static long bench_fill_one(__u32 i, void *ctx)
{
	struct bench_varied *v = *(struct bench_varied **)ctx;
	struct tcpoom_event *e = bpf_map_lookup_elem(&bench_pool, &i);

	if (!e)
		return 1;
	bench_build(e, &v->base, bench_mix(i + 1));
	v->built = i + 1;
	return 0;
}

/* the family's counters, as its real program bumps them */
static __always_inline void bench_tally(const struct tcpoom_event *e)
{
	struct tcpoom_counters *c = cpu_counters();

	switch (e->family) {
	case FAMILY_TW_OVERFLOW:
		tally(c, CNT_TW_OVERFLOW);
		break;
	case FAMILY_OOM_CHECK:
		tally_oom(c, e);
		break;
	case FAMILY_MEM_EXCEED:
		tally_exceed(c, e->verdict & VERDICT_RECV);
		break;
	default:
		tally(c, e->verdict & VERDICT_ENTER ? CNT_PRESSURE_ENTER : CNT_PRESSURE_LEAVE);
	}
}

static long bench_varied_one(__u32 i, void *ctx)
{
	struct bench_varied *v = *(struct bench_varied **)ctx;
	/* in pool order: the records are in random order already, and a walk
	 * the CPU can prefetch costs less than a random pick (456 against 629
	 * ns a record, with bpf_stats) */
	__u32 k = (v->seq + i) & (BENCH_POOL - 1);
	struct tcpoom_event *e = bpf_map_lookup_elem(&bench_pool, &k);

	if (!e)
		return 1;
	e->ts_ns = bpf_ktime_get_ns();
	bench_tally(e);
	emit(e);
	return 0;
}

static __always_inline int bench_varied(void)
{
	__u32 zero = 0;
	struct bench_varied *v = bpf_map_lookup_elem(&bench_scratch, &zero);
	struct tcpoom_event *b;

	if (!v)
		return 0;
	if (v->built < BENCH_POOL) {
		b = &v->base;
		init_event(b, 0, METHOD_TP_BTF);
		b->tcp_mem[0] = BENCH_TCP_MEM0;
		b->tcp_mem[1] = BENCH_TCP_MEM1;
		b->tcp_mem[2] = BENCH_TCP_MEM2;
		b->exact = FIELD_SOCKET | FIELD_MEMORY | FIELD_TCP_MEM | FIELD_PRESSURE;
		bpf_loop(BENCH_POOL, bench_fill_one, &v, 0);
	}
	/* bpf_loop's context is on the stack: the scratch record by pointer */
	bpf_loop(bench_batch, bench_varied_one, &v, 0);
	v->seq += bench_batch;
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_sys_enter, struct pt_regs *regs, long id)
{
	struct tcpoom_event e;

	if ((bpf_get_current_pid_tgid() >> 32) != bench_tgid)
		return 0;
	if (id == 110 /* __NR_getppid, x86_64 */)
		return bench_varied();
	if (id != 39 /* __NR_getpid, x86_64 */)
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
