// allcnnc emulator shim: CUDA built-ins for a host build.
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct allcnnc_uint3 {
    unsigned x, y, z;
};
static thread_local allcnnc_uint3 threadIdx;
static thread_local allcnnc_uint3 blockIdx;
static allcnnc_uint3 blockDim;
static allcnnc_uint3 gridDim;
static std::barrier<>* allcnnc_emu_barrier = nullptr;
static float* allcnnc_emu_dynamic_shared = nullptr;

inline void __syncthreads() { allcnnc_emu_barrier->arrive_and_wait(); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
using std::exp;
using std::log;

// Tensor cores. mma.sync is warp-wide: each lane posts its fragment
// registers, the block meets at the barrier (every thread of a block reaches
// each mma, as all lanes of a warp must on the GPU), each lane computes its
// own four D elements from its warp's posted registers with the PTX ISA's
// fragment layouts, and a second barrier frees the slots for the next mma.
struct allcnnc_emu_mma_slot {
    unsigned a[4];
    unsigned b[2];
};
static allcnnc_emu_mma_slot allcnnc_emu_mma_slots[1024];

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

inline unsigned allcnnc_emu_to_bf16x2(float lo, float hi) {
    return allcnnc_emu_bf16(lo) | (allcnnc_emu_bf16(hi) << 16);
}

// D (16 x 8) += A (16 x K) * B (K x 8); `a_at(row, k)` and `b_at(k, col)`
// read the posted fragments of this warp.
template <int K, class A, class B>
inline void allcnnc_emu_mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                            A a_at, B b_at) {
    const unsigned lane = threadIdx.x % 32, base = threadIdx.x - lane;
    auto& mine = allcnnc_emu_mma_slots[threadIdx.x];
    std::copy(a, a + 4, mine.a);
    std::copy(b, b + 2, mine.b);
    allcnnc_emu_barrier->arrive_and_wait();
    const int g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) {
        const int row = g + 8 * (r / 2), col = 2 * t + r % 2;
        float sum = d[r];
        for (int k = 0; k < K; ++k) {
            sum += a_at(allcnnc_emu_mma_slots + base, row, k) *
                   b_at(allcnnc_emu_mma_slots + base, k, col);
        }
        d[r] = sum;
    }
    allcnnc_emu_barrier->arrive_and_wait();
}

// m16n8k8 tf32: A(row, k) in lane (row % 8) * 4 + k % 4, register
// (row >= 8) + 2 (k >= 4); B(k, col) in lane col * 4 + k % 4, register k >= 4.
inline void allcnnc_emu_mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    allcnnc_emu_mma<8>(
        d, a, b,
        [](const allcnnc_emu_mma_slot* s, int row, int k) {
            return allcnnc_emu_bits(s[(row % 8) * 4 + k % 4].a[(row >= 8) + 2 * (k >= 4)]);
        },
        [](const allcnnc_emu_mma_slot* s, int k, int col) {
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
        [&](const allcnnc_emu_mma_slot* s, int row, int k) {
            return half(s[(row % 8) * 4 + (k % 8) / 2].a[(row >= 8) + 2 * (k >= 8)], k);
        },
        [&](const allcnnc_emu_mma_slot* s, int k, int col) {
            return half(s[col * 4 + (k % 8) / 2].b[k >= 8], k);
        });
}

// Converts to any pointer type: the trampolines' pointer arguments.
struct allcnnc_any_ptr {
    void* p;
    template <class T>
    operator T*() const { return static_cast<T*>(p); }
};

// `independent`: the kernel has no shared memory, so its blocks need no
// barrier between them (each thread walks every block in the same order, so
// a __syncthreads still meets all threads in the same block).
extern "C" int allcnnc_emu_run(void (*kernel)(void**), void** args, unsigned gx, unsigned gy,
                               unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned shared_bytes, int independent) {
    std::vector<float> dynamic_shared(shared_bytes / 4 + 1);
    allcnnc_emu_dynamic_shared = dynamic_shared.data();
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    const unsigned threads = bx * by * bz;
    std::barrier<> barrier(threads);
    allcnnc_emu_barrier = &barrier;
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            threadIdx = {t % bx, (t / bx) % by, t / (bx * by)};
            for (unsigned z = 0; z < gz; ++z) {
                for (unsigned y = 0; y < gy; ++y) {
                    for (unsigned x = 0; x < gx; ++x) {
                        blockIdx = {x, y, z};
                        kernel(args);
                        // The next block reuses the shared arrays.
                        if (!independent) {
                            barrier.arrive_and_wait();
                        }
                    }
                }
            }
        });
    }
    for (auto& worker : workers) {
        worker.join();
    }
    return 0;
}
