// allcnnc emulator shim: CUDA built-ins for a host build.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
// A worker thread runs one block at a time, so a block's shared memory is
// the worker's (thread_local), shared by the block's fibers.
#define __shared__ static thread_local

struct allcnnc_uint3 {
    unsigned x, y, z;
};

// The CUDA threads of a block are fibers on one worker thread. A fiber runs
// until it reaches __syncthreads (or returns), then hands over to the next
// live fiber of the ring; when the last one arrives, the first resumes past
// the barrier. A barrier costs one user-space switch per thread, not the
// wake-up of 256 OS threads, and workers run different blocks at once
// (blocks share device memory; the atomics and fences below are the
// host's, so blocks on different workers see each other as on a GPU).
#if defined(__x86_64__)
struct allcnnc_emu_context {
    void* sp = nullptr;
};
#else
struct allcnnc_emu_context {
    ucontext_t uc;
};
#endif

struct allcnnc_emu_fiber {
    allcnnc_emu_context context;
    allcnnc_uint3 thread;
    bool done;
};

struct allcnnc_emu_worker {
    std::vector<allcnnc_emu_fiber> fibers;
    std::vector<unsigned char> stacks;
    allcnnc_emu_context scheduler;
    unsigned current = 0, live = 0;
    void (*kernel)(void**) = nullptr;
    void** args = nullptr;
};

static constexpr size_t allcnnc_emu_stack_bytes = 128 * 1024;
static thread_local allcnnc_emu_worker* allcnnc_emu_self = nullptr;
static thread_local allcnnc_uint3* allcnnc_emu_thread = nullptr;
static thread_local allcnnc_uint3 blockIdx;
#define threadIdx (*allcnnc_emu_thread)
static allcnnc_uint3 blockDim;
static allcnnc_uint3 gridDim;
static thread_local float* allcnnc_emu_dynamic_shared = nullptr;
// Warp-wide instructions (mma.sync, ldmatrix) each thread of the running
// block has issued, zeroed when a block starts: their parity picks the set
// of lane slots (see allcnnc_emu_post).
static thread_local unsigned allcnnc_emu_collectives[1024];

#if defined(__x86_64__)
// Saves the callee-saved registers and the SSE / x87 control words on the
// current stack, stores its pointer in *save and continues on `load`.
extern "C" void allcnnc_emu_switch(void** save, void* load);
asm(".text\n"
    ".globl allcnnc_emu_switch\n"
    ".hidden allcnnc_emu_switch\n"
    ".type allcnnc_emu_switch,@function\n"
    "allcnnc_emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size allcnnc_emu_switch, .-allcnnc_emu_switch\n");
#endif

// Saves the running context in `from` and continues `to`.
inline void allcnnc_emu_swap(allcnnc_emu_context* from, allcnnc_emu_context* to) {
#if defined(__x86_64__)
    allcnnc_emu_switch(&from->sp, to->sp);
#else
    swapcontext(&from->uc, &to->uc);
#endif
}

inline void allcnnc_emu_jump(allcnnc_emu_context* from, unsigned to) {
    allcnnc_emu_worker* w = allcnnc_emu_self;
    w->current = to;
    allcnnc_emu_thread = &w->fibers[to].thread;
    allcnnc_emu_swap(from, &w->fibers[to].context);
}

inline unsigned allcnnc_emu_next(unsigned from) {
    allcnnc_emu_worker* w = allcnnc_emu_self;
    const unsigned n = w->fibers.size();
    unsigned to = (from + 1) % n;
    while (w->fibers[to].done) {
        to = (to + 1) % n;
    }
    return to;
}

inline void __syncthreads() {
    allcnnc_emu_worker* w = allcnnc_emu_self;
    const unsigned from = w->current;
    const unsigned to = allcnnc_emu_next(from);
    if (to != from) {
        allcnnc_emu_jump(&w->fibers[from].context, to);
    }
}

// Where every fiber starts: the kernel, then the next live fiber, or the
// scheduler after the last one.
static void allcnnc_emu_fiber_main() {
    allcnnc_emu_worker* w = allcnnc_emu_self;
    w->kernel(w->args);
    const unsigned me = w->current;
    w->fibers[me].done = true;
    w->live -= 1;
    // This fiber never resumes: its context is saved nowhere that matters.
    allcnnc_emu_context discard;
    if (w->live == 0) {
        allcnnc_emu_swap(&discard, &w->scheduler);
    }
    allcnnc_emu_jump(&discard, allcnnc_emu_next(me));
    __builtin_unreachable();
}

// Runs every thread of the block `blockIdx` on the calling worker.
static void allcnnc_emu_run_block(allcnnc_emu_worker& w) {
    const unsigned n = w.fibers.size();
    for (unsigned t = 0; t < n; ++t) {
        allcnnc_emu_fiber& fiber = w.fibers[t];
        fiber.done = false;
        unsigned char* top = w.stacks.data() + (size_t)(t + 1) * allcnnc_emu_stack_bytes;
#if defined(__x86_64__)
        // A frame allcnnc_emu_switch returns through into fiber_main: the
        // control words, six zeroed registers, the entry address at a
        // 16-byte boundary (so the entry sees the stack of a call).
        auto* slot = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(top) & ~uintptr_t(15));
        *--slot = 0;
        *--slot = reinterpret_cast<uint64_t>(&allcnnc_emu_fiber_main);
        for (int r = 0; r < 6; ++r) {
            *--slot = 0;
        }
        *--slot = 0x037full << 32 | 0x1f80u;
        fiber.context.sp = slot;
#else
        getcontext(&fiber.context.uc);
        fiber.context.uc.uc_stack.ss_sp = top - allcnnc_emu_stack_bytes;
        fiber.context.uc.uc_stack.ss_size = allcnnc_emu_stack_bytes;
        fiber.context.uc.uc_link = nullptr;
        makecontext(&fiber.context.uc, allcnnc_emu_fiber_main, 0);
#endif
    }
    std::fill(allcnnc_emu_collectives, allcnnc_emu_collectives + n, 0u);
    w.live = n;
    allcnnc_emu_jump(&w.scheduler, 0);
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
// Device-scope atomics and fences, as the weight-gradient fix-up uses them
// (PTX: atom.inc, membar.gl, ld.global.cg): sequentially consistent host
// atomics, which order at least as strongly. atomicInc: old >= limit ? 0 :
// old + 1, returning old.
inline unsigned atomicInc(unsigned* address, unsigned limit) {
    unsigned old = __atomic_load_n(address, __ATOMIC_SEQ_CST);
    while (!__atomic_compare_exchange_n(address, &old, old >= limit ? 0u : old + 1u, false,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline float __ldcg(const float* address) {
    float value;
    __atomic_load(address, &value, __ATOMIC_RELAXED);
    return value;
}
// CUDA's 16-byte vector and the prelude's 16-byte load (ld.global.v4.f32).
// On a GPU a misaligned vector load faults ("misaligned address"), so here
// it stops the process naming the address instead of reading anyway.
struct alignas(16) float4 {
    float x, y, z, w;
};
// Stops the process, naming `what` and the address, where `address` is
// not 16-byte aligned.
inline void allcnnc_emu_require_aligned16(const void* address, const char* what) {
    if (reinterpret_cast<uintptr_t>(address) % 16 != 0) {
        std::fprintf(stderr, "allcnnc emulator: %s at %p\n", what, address);
        std::abort();
    }
}
inline float4 allcnnc_emu_load4(const float* address) {
    allcnnc_emu_require_aligned16(address, "misaligned 16-byte load");
    float4 value;
    std::memcpy(&value, address, sizeof value);
    return value;
}
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
using std::exp;
using std::log;

// Warp-wide instructions (mma.sync, ldmatrix). Each lane posts its operands
// (fragment registers, or the row address it supplies) and its warp meets
// at a warp barrier (every lane of a warp reaches each of them, as on the
// GPU); then each lane computes its own results from its warp's posted
// slots with the PTX ISA's layouts. The warp barrier hands over to the next
// lane of the same warp only, not to the block: a warp runs on past its
// warp-wide instructions while the other warps wait where they are, so
// shared memory is ordered by the kernel's own __syncthreads alone, and a
// missing one shows (a warp reads a tile the others have not stored yet, or
// stores over one they still read). The slots alternate between two sets,
// so one barrier per instruction suffices: a lane can post its next
// instruction's operands (in the other set) while the lanes after it still
// read this one's, and it cannot post into this set again before every lane
// of its warp has passed the next warp barrier, that is read it. The slots
// are the worker's: one block runs on a worker at a time.
struct allcnnc_emu_lane_slot {
    unsigned a[4];
    unsigned b[2];
    const unsigned char* row;
};
static thread_local allcnnc_emu_lane_slot allcnnc_emu_slots[2][1024];

// The warp barrier: on to the next live lane of this warp (lane 31 hands
// back to lane 0), so the warp's lanes take turns as a block's threads do at
// __syncthreads. Fibers are numbered by threadIdx.x, 32 to a warp.
inline void allcnnc_emu_warp_sync() {
    allcnnc_emu_worker* w = allcnnc_emu_self;
    const unsigned from = w->current;
    const unsigned base = from - from % 32;
    const unsigned lanes = std::min(32u, (unsigned)w->fibers.size() - base);
    unsigned to = from;
    for (unsigned step = 1; step < lanes; ++step) {
        const unsigned lane = base + (from - base + step) % lanes;
        if (!w->fibers[lane].done) {
            to = lane;
            break;
        }
    }
    if (to != from) {
        allcnnc_emu_jump(&w->fibers[from].context, to);
    }
}

// Posts this lane's slot and waits for its warp; returns the warp's slots.
inline const allcnnc_emu_lane_slot* allcnnc_emu_post(const allcnnc_emu_lane_slot& mine) {
    const unsigned set = allcnnc_emu_collectives[threadIdx.x]++ % 2;
    allcnnc_emu_slots[set][threadIdx.x] = mine;
    allcnnc_emu_warp_sync();
    return allcnnc_emu_slots[set] + (threadIdx.x - threadIdx.x % 32);
}

// ldmatrix.sync.aligned.m8n8.xN.shared.b16: lanes 8j .. 8j + 7 supply the
// 16-byte rows of matrix j (j < N; other lanes' addresses are ignored), and
// lane i receives in register j the 32 bits at row i / 4, bytes
// 4 (i % 4) .. 4 (i % 4) + 3, of matrix j. A row address that is not
// 16-byte aligned stops the process, as it is undefined on the GPU.
template <int N>
inline void allcnnc_emu_ldmatrix(unsigned (&d)[N], const void* row) {
    if (threadIdx.x % 32 < 8 * N) {
        allcnnc_emu_require_aligned16(row, "ldmatrix row not 16-byte aligned");
    }
    allcnnc_emu_lane_slot mine{};
    mine.row = static_cast<const unsigned char*>(row);
    const allcnnc_emu_lane_slot* warp = allcnnc_emu_post(mine);
    const unsigned lane = threadIdx.x % 32;
    for (int j = 0; j < N; ++j) {
        std::memcpy(&d[j], warp[8 * j + lane / 4].row + 4 * (lane % 4), 4);
    }
}

inline float allcnnc_emu_bits(unsigned u) {
    float v;
    std::memcpy(&v, &u, 4);
    return v;
}

// cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away.
inline unsigned allcnnc_emu_to_tf32(float v) {
    unsigned u;
    std::memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {
        u += 0x1000u;
    }
    return u & 0xffffe000u;
}

// cvt.rn.bf16 of one value (round to nearest even), as the top 16 bits.
inline unsigned allcnnc_emu_bf16(float v) {
    unsigned u;
    std::memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu) != 0) {
        return 0x7fc0u;
    }
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// D (16 x 8) += A (16 x K) * B (K x 8); `a_at(row, k)` and `b_at(k, col)`
// read the posted fragments of this warp.
template <int K, class A, class B>
inline void allcnnc_emu_mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                            A a_at, B b_at) {
    allcnnc_emu_lane_slot mine{};
    std::copy(a, a + 4, mine.a);
    std::copy(b, b + 2, mine.b);
    const allcnnc_emu_lane_slot* warp = allcnnc_emu_post(mine);
    const unsigned lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) {
        const int row = g + 8 * (r / 2), col = 2 * t + r % 2;
        float sum = d[r];
        for (int k = 0; k < K; ++k) {
            sum += a_at(warp, row, k) * b_at(warp, k, col);
        }
        d[r] = sum;
    }
}

// m16n8k8 tf32: A(row, k) in lane (row % 8) * 4 + k % 4, register
// (row >= 8) + 2 (k >= 4); B(k, col) in lane col * 4 + k % 4, register k >= 4.
inline void allcnnc_emu_mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    allcnnc_emu_mma<8>(
        d, a, b,
        [](const allcnnc_emu_lane_slot* s, int row, int k) {
            return allcnnc_emu_bits(s[(row % 8) * 4 + k % 4].a[(row >= 8) + 2 * (k >= 4)]);
        },
        [](const allcnnc_emu_lane_slot* s, int k, int col) {
            return allcnnc_emu_bits(s[col * 4 + k % 4].b[k >= 4]);
        });
}

// m16n8k16 bf16: pairs of consecutive k share a register (lower k in bits
// 0-15); A(row, k) in lane (row % 8) * 4 + (k % 8) / 2, register
// (row >= 8) + 2 (k >= 8); B(k, col) in lane col * 4 + (k % 8) / 2,
// register k >= 8.
inline void allcnnc_emu_mma_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    auto half = [](unsigned reg, int k) { return allcnnc_emu_bits((k % 2 ? reg >> 16 : reg & 0xffffu) << 16); };
    allcnnc_emu_mma<16>(
        d, a, b,
        [&](const allcnnc_emu_lane_slot* s, int row, int k) {
            return half(s[(row % 8) * 4 + (k % 8) / 2].a[(row >= 8) + 2 * (k >= 8)], k);
        },
        [&](const allcnnc_emu_lane_slot* s, int k, int col) {
            return half(s[col * 4 + (k % 8) / 2].b[k >= 8], k);
        });
}

// Converts to any pointer type: the trampolines' pointer arguments.
struct allcnnc_any_ptr {
    void* p;
    template <class T>
    operator T*() const { return static_cast<T*>(p); }
};

// Runs a grid: one worker per core takes blocks in turn.
extern "C" int allcnnc_emu_run(void (*kernel)(void**), void** args, unsigned gx, unsigned gy,
                               unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned shared_bytes) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    const unsigned threads = bx * by * bz;
    const unsigned long long blocks = (unsigned long long)gx * gy * gz;
    std::atomic<unsigned long long> next{0};
    auto work = [&] {
        allcnnc_emu_worker worker;
        worker.kernel = kernel;
        worker.args = args;
        worker.fibers.resize(threads);
        for (unsigned t = 0; t < threads; ++t) {
            worker.fibers[t].thread = {t % bx, (t / bx) % by, t / (bx * by)};
        }
        worker.stacks.resize((size_t)threads * allcnnc_emu_stack_bytes);
        std::vector<float> dynamic_shared(shared_bytes / 4 + 1);
        allcnnc_emu_dynamic_shared = dynamic_shared.data();
        allcnnc_emu_self = &worker;
        for (unsigned long long b; (b = next.fetch_add(1)) < blocks;) {
            blockIdx = {(unsigned)(b % gx), (unsigned)(b / gx % gy), (unsigned)(b / gx / gy)};
            allcnnc_emu_run_block(worker);
        }
        allcnnc_emu_self = nullptr;
    };
    const unsigned long long cores = std::max(1u, std::thread::hardware_concurrency());
    const unsigned helpers = (unsigned)std::min(cores, blocks) - 1;
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < helpers; ++i) {
        pool.emplace_back(work);
    }
    work();
    for (auto& thread : pool) {
        thread.join();
    }
    return 0;
}
