/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pressure: TCP enters or leaves memory pressure (TCPMemoryPressures). fentry,
 * else kprobe, tcp_enter/leave_memory_pressure; else sampled from /proc in
 * user space.
 */
#ifndef __TCPOOM_PRESSURE_BPF_H
#define __TCPOOM_PRESSURE_BPF_H

#include "common.bpf.h"

/* (tid, cpu) -> a tcp_enter_memory_pressure() call that found the flag 0,
 * with the figures that say why (struct pressure_call: verdict.h) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct entry_key);
	__type(value, struct pressure_call);
} pressure_calls SEC(".maps");

/* Episodes already reported: the flag's value (enter) or value | PRESSURE_LEFT
 * (leave). An LRU: old episodes age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} episodes SEC(".maps");

static __always_inline unsigned long *pressure_flag(struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_prot, memory_pressure);
}

static __always_inline int report_pressure(struct sock *sk, unsigned long since, bool enter,
					   __u8 method, const struct pressure_call *c)
{
	struct tcpoom_event ev, *e = &ev;

	if (!pass_filters(sk))
		return 0;
	count(enter ? CNT_PRESSURE_ENTER : CNT_PRESSURE_LEAVE);
	start_event(e, FAMILY_PRESSURE, method, sk, BPF_CORE_READ(sk, __sk_common.skc_prot));
	mark_pressure(e, since, enter);
	if (c)
		mark_pressure_cause(e, c);
	emit(e);
	return 0;
}

/*
 * tcp_enter_memory_pressure() is called on every allocation above tcp_mem[1]
 * (and on allocation failures) but only the first enters (cmpxchg 0 ->
 * jiffies, 4.13+): at entry, a call that finds the flag set leaves after one
 * load; one that finds it 0 keeps memory_allocated and tcp_mem[1] for its
 * return, which reports the episode once (verdict.h, PRESSURE_LEFT).
 */
static __always_inline int pressure_enter_call(struct sock *sk)
{
	struct proto *prot = BPF_CORE_READ(sk, __sk_common.skc_prot);
	struct pressure_call c = { .sk = (__u64)sk, .allocated = -1, .tcp_mem1 = -1 };
	atomic_long_t *allocated;
	struct entry_key key;
	unsigned long since;
	long *mem;
	long v;

	if (!pressure_changes(pressure_flag(sk), true, &since))
		return 0;
	allocated = BPF_CORE_READ(prot, memory_allocated);
	if (allocated && !bpf_probe_read_kernel(&v, sizeof(v), &allocated->counter))
		c.allocated = v < 0 ? 0 : v;
	mem = BPF_CORE_READ(prot, sysctl_mem);
	if (mem && !bpf_probe_read_kernel(&v, sizeof(v), &mem[1]))
		c.tcp_mem1 = v;
	key = entry_key_now();
	bpf_map_update_elem(&pressure_calls, &key, &c, BPF_ANY);
	return 0;
}

/* `sk`: fexit's own argument, a BTF pointer (the owner's sk_storage and --pid
 * need one: a socket address taken from a map is a plain number to the
 * verifier); the kretprobe has none and passes NULL: the entry's socket then. */
static __always_inline int pressure_enter_return(struct sock *sk, __u8 method)
{
	struct entry_key key = entry_key_now();
	struct pressure_call *p = bpf_map_lookup_elem(&pressure_calls, &key);
	struct pressure_call c;
	unsigned long *flag;
	unsigned long v = 0;
	__u8 one = 1;
	__u64 k;

	if (!p)
		return 0;
	c = *p;
	bpf_map_delete_elem(&pressure_calls, &key);
	if (!METHOD_BTF(method))
		sk = (struct sock *)c.sk;
	flag = pressure_flag(sk);
	if (!flag || bpf_probe_read_kernel(&v, sizeof(v), flag) || !v)
		return 0;
	k = v;
	if (bpf_map_update_elem(&episodes, &k, &one, BPF_NOEXIST))
		return 0;	/* a racer reported this episode */
	return report_pressure(sk, v, true, method, &c);
}

/* tcp_leave_memory_pressure() runs on every allocation below tcp_mem[0]: a
 * call that finds the flag set will see it cleared (by its own xchg or a
 * racer's), so it reports at entry, once per episode. */
static __always_inline int pressure_leave_call(struct sock *sk, __u8 method)
{
	unsigned long since;
	__u8 one = 1;
	__u64 k;

	if (!pressure_changes(pressure_flag(sk), false, &since))
		return 0;
	k = (__u64)since | PRESSURE_LEFT;
	if (bpf_map_update_elem(&episodes, &k, &one, BPF_NOEXIST))
		return 0;
	k = since;
	bpf_map_delete_elem(&episodes, &k);	/* the episode's enter: done with */
	return report_pressure(sk, since, false, method, NULL);
}

SEC("fentry/tcp_enter_memory_pressure")
int BPF_PROG(enter_pressure_fentry, struct sock *sk)
{
	return pressure_enter_call(sk);
}

SEC("fexit/tcp_enter_memory_pressure")
int BPF_PROG(enter_pressure_fexit, struct sock *sk)
{
	return pressure_enter_return(sk, METHOD_FENTRY);
}

SEC("fentry/tcp_leave_memory_pressure")
int BPF_PROG(leave_pressure_fentry, struct sock *sk)
{
	return pressure_leave_call(sk, METHOD_FENTRY);
}

SEC("kprobe/tcp_enter_memory_pressure")
int BPF_KPROBE(enter_pressure_kprobe, struct sock *sk)
{
	return pressure_enter_call(sk);
}

/* The kretprobe has no arguments: the socket comes from the call's entry. */
SEC("kretprobe/tcp_enter_memory_pressure")
int BPF_KRETPROBE(enter_pressure_kretprobe)
{
	return pressure_enter_return(NULL, METHOD_KPROBE);
}

SEC("kprobe/tcp_leave_memory_pressure")
int BPF_KPROBE(leave_pressure_kprobe, struct sock *sk)
{
	return pressure_leave_call(sk, METHOD_KPROBE);
}

#endif /* __TCPOOM_PRESSURE_BPF_H */
