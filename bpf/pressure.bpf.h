/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pressure: TCP enters or leaves memory pressure (TCPMemoryPressures). fentry,
 * else kprobe, tcp_enter/leave_memory_pressure; else sampled from /proc in
 * user space.
 */
#ifndef __TCPOOM_PRESSURE_BPF_H
#define __TCPOOM_PRESSURE_BPF_H

#include "common.bpf.h"

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
	unsigned long since;
	struct tcpoom_event ev, *e = &ev;

	if (!pressure_changes(flag, enter, &since))
		return 0;
	if (!pass_filters(sk))
		return 0;
	count(enter ? CNT_PRESSURE_ENTER : CNT_PRESSURE_LEAVE);
	start_event(e, FAMILY_PRESSURE, method, sk, BPF_CORE_READ(sk, __sk_common.skc_prot));
	mark_pressure(e, since, enter);
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

#endif /* __TCPOOM_PRESSURE_BPF_H */
