/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The process-context hooks that note a socket's owner (bpf/owner.bpf.h has
 * the store and what events read from it). Included by tcpoom.bpf.c only: the
 * loader turns on the ones the plan lists (tracer/kernel/plan/owner.py owner_plan).
 */
#ifndef __TCPOOM_OWNER_HOOKS_BPF_H
#define __TCPOOM_OWNER_HOOKS_BPF_H

#include <bpf/bpf_tracing.h>
#include "owner.bpf.h"

/* Loaded only where the TIME_WAIT inference's own inet_sock_set_state program
 * is not (otherwise that one notes the owner: owner_at_set_state). */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(owner_state_btf, const struct sock *sk, int oldstate, int newstate)
{
	note_owner_at_state(sk, oldstate, newstate, true);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(owner_state_raw, const struct sock *sk, int oldstate, int newstate)
{
	note_owner_at_state(sk, oldstate, newstate, false);
	return 0;
}

/* sock_sendmsg()/sock_recvmsg() (6.3+): every send and receive, in the
 * caller's context, for every protocol. The same owner costs a lookup and a
 * compare. */
/* sk is a BTF pointer here and sk_protocol a u16 on every kernel that has
 * these tracepoints: a direct load, not a probe read, on this hot path. */
static __always_inline bool owner_tcp_btf(const struct sock *sk)
{
	return sk && sk->sk_protocol == IPPROTO_TCP;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(owner_send_btf, struct sock *sk, int ret, int flags)
{
	if (owner_tcp_btf(sk))
		note_owner(sk, true);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(owner_recv_btf, struct sock *sk, int ret, int flags)
{
	if (owner_tcp_btf(sk))
		note_owner(sk, true);
	return 0;
}

/* tcp_recvmsg() (4.16+) where the send/recv tracepoints do not exist: every
 * read that copied data. TCP only. */
SEC("tp_btf/tcp_rcv_space_adjust")
int BPF_PROG(owner_rcvspace_btf, struct sock *sk)
{
	note_owner(sk, true);
	return 0;
}

SEC("raw_tp/tcp_rcv_space_adjust")
int BPF_PROG(owner_rcvspace_raw, struct sock *sk)
{
	note_owner(sk, false);
	return 0;
}

/* The hash map's entry dies with the socket (tcp_v4_destroy_sock, 4.16+),
 * after every event it could name. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(owner_destroy_btf, struct sock *sk)
{
	forget_owner(sk, false);
	return 0;
}

SEC("raw_tp/tcp_destroy_sock")
int BPF_PROG(owner_destroy_raw, struct sock *sk)
{
	forget_owner(sk, false);
	return 0;
}

#endif /* __TCPOOM_OWNER_HOOKS_BPF_H */
