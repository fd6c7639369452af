#!/usr/bin/env python3
"""Shared-memory bank conflicts of the tensor-core tiles' gather stores.

A model of warp 0's stores, not a measurement: it mirrors the walks of
src/back/cuda/prelude.cu (for_tile4 / for_tile4_rows before 049b7c4,
for_tile4_k_fast after) and the MmaTiles / DyCopy layouts (BK = 16; tf32
rows of BK + 4 words, bf16 rows of BK + 8 halves), and prints for each
store the worst number of distinct words one bank serves. Two lanes
writing the same word (bf16 halves) do not conflict. Usage:
python3 bench/smem-banks.py
"""
from collections import defaultdict
BK=16
def ways(addrs):
    banks=defaultdict(set)
    for a in addrs: banks[a%32].add(a)
    return max(len(v) for v in banks.values())
def word(prec,r,k):
    return r*(BK+4)+k if prec=='tf32' else r*((BK+8)//2)+k//2
def old_groups_c(R,C,e): return (e//(C//4), 4*(e%(C//4)))   # for_tile4: groups along c, threads along c
def old_groups_r(R,C,e): return (4*(e%(R//4)), e//(R//4))   # for_tile4_rows
def kfast_groups_c(R,C,e): return (e%R, 4*(e//R))           # k = r
def kfast_groups_r(R,C,e): return (4*(e//C), e%C)           # k = c
def worst(prec, walk, R, C, kaxis):
    w=1
    for i in range(4):
        addrs=[]
        for lane in range(32):
            r,c=walk(R,C,lane)
            if kaxis=='r': n,k=c+i,r       # B tile BK x BN, stored b[n][k]
            else: n,k=r+i,c                # A tile BM x BK, stored a[m][k]
            addrs.append(word(prec,n,k))
        w=max(w,ways(addrs))
    return w
def worst_dy(walk,R,C,new):
    w=1
    for i in range(4):
        addrs=[]
        for lane in range(32):
            k,n=walk(R,C,lane)
            addrs.append((n+i)*(BK+4)+k if new else k*C+n+i)
        w=max(w,ways(addrs))
    return w
print('store                      BN/BM  old  new (worst ways of the four stores of a group)')
for prec in ['tf32','bf16']:
    for N in [16,32,64,128]:
        print(f'{prec} forward/wgrad B  {N:4}   {worst(prec,old_groups_c,BK,N,"r"):3}  {worst(prec,kfast_groups_c,BK,N,"r"):3}')
    for M in [64,128]:
        print(f'{prec} wgrad A          {M:4}   {worst(prec,old_groups_r,M,BK,"c"):3}  {worst(prec,kfast_groups_r,M,BK,"c"):3}')
for N in [16,32,64,128]:
    print(f'fp32 dy copy (bias)   {N:4}   {worst_dy(old_groups_c,BK,N,False):3}  {worst_dy(kfast_groups_c,BK,N,True):3}')
# bias sums: thread n reads dy[n][k..k+3] (16 bytes): per quarter warp, 8 lanes
qw=[]
for q in range(4):
    addrs=set()
    banks=defaultdict(set)
    for lane in range(8*q,8*q+8):
        for j in range(4): a=lane*(BK+4)+j; banks[a%32].add(a)
    qw.append(max(len(v) for v in banks.values()))
print('bias-sum 16-byte reads, worst ways per quarter warp:', max(qw))
