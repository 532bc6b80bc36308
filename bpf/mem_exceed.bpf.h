/* SPDX-License-Identifier: GPL-2.0 */
/* mem_exceed: an allocation refused at tcp_mem[2]; tp_btf/raw_tp sock_exceed_buf_limit. */
#ifndef __TCPOOM_MEM_EXCEED_BPF_H
#define __TCPOOM_MEM_EXCEED_BPF_H

#include "common.bpf.h"
#include "mem_class.bpf.h"

/* __sk_mem_raise_allocated() refused memory at tcp_mem[2]: 3.1+; `kind`
 * (SK_MEM_SEND 0 / SK_MEM_RECV 1) since 4.19. Fires for every protocol. */
static __always_inline int on_exceed(struct sock *sk, struct proto *prot, long allocated,
				     int kind, __u8 method)
{
	struct tcpoom_event ev, *e = &ev;

	if (!sk || sk_protocol_of(sk) != IPPROTO_TCP)
		return 0;
	if (!pass_filters(sk))
		return 0;
	tally_exceed(cpu_counters(), kind);
	start_event(e, FAMILY_MEM_EXCEED, method, sk, prot);
	mark_exceed(e, allocated, kind);
	classify_refusal(e, sk, prot, allocated);
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

#endif /* __TCPOOM_MEM_EXCEED_BPF_H */
