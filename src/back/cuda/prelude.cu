// ---------------------------------------------------------------------------
// allcnnc prelude: the generic device code every generated module shares.
//
// The layer kernels below the prelude instantiate these templates with a
// struct of compile-time constants (shapes, window, activation, tiling), so
// every shape is a constant the compiler folds. Conventions (the runtime's
// plan module): activations are N x H x W x C (channels-last) f32, weights
// KH x KW x C_in x C_out (HWIO), the batch size `n` is the only run-time size.
// ---------------------------------------------------------------------------

typedef unsigned long long u64;

namespace allcnnc {

constexpr int ACT_NONE = 0;
constexpr int ACT_RELU = 1;
constexpr int ACT_LEAKY = 2;

// The ReLU rules of Springenberg et al., Figure 1 (runtime::plan::ReluRule).
constexpr int RULE_BACKPROP = 0;
constexpr int RULE_DECONVNET = 1;
constexpr int RULE_GUIDED = 2;

// The switch of a max-pool window that saw no input (u32::MAX on the CPU).
constexpr int NO_SWITCH = -1;

// Threads of every tiled GEMM block (16 x 16) and the depth of a K step.
constexpr int TILE_THREADS = 256;
constexpr int BK = 16;

constexpr u64 GOLDEN_GAMMA = 0x9e3779b97f4a7c15ULL;

// SplitMix64's finaliser (runtime::cpu::rng::mix64).
__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// runtime::cpu::rng::derive_key.
__device__ __forceinline__ u64 derive_key(u64 key, u64 index) {
    return mix64(key ^ mix64(index + GOLDEN_GAMMA));
}

// Whether value `j` of image `image` survives dropout with probability `p`.
// The CPU draws image i's mask from the SplitMix64 stream keyed by
// derive_key(layer_key, i), one draw per value in order; the j-th draw is
// mix64(key + (j + 1) * gamma), so any value's draw can be computed alone
// and the GPU's masks equal the CPU's bit for bit.
__device__ __forceinline__ bool dropout_keep_keyed(u64 image_key, int j, float p) {
    const u64 bits = mix64(image_key + (u64)(j + 1) * GOLDEN_GAMMA);
    const float u = (float)(bits >> 40) * (1.0f / 16777216.0f);
    return u >= p;
}

__device__ __forceinline__ bool dropout_keep(u64 layer_key, int image, int j, float p) {
    return dropout_keep_keyed(derive_key(layer_key, (u64)image), j, p);
}

// The stream key of the image a thread's last dropout value belonged to:
// the values a thread gathers in a forward GEMM tile come from one image
// for long runs, so derive_key (two of the three SplitMix64 finalisers a
// value's mask costs) runs only when the image changes. (The weight-gradient
// kernels keep no cache across their loads: one there made ptxas spill at
// the 128-register cap in fp32; they derive a key per group of four.)
struct ImageKeyCache {
    int image;
    u64 key;
};

__device__ __forceinline__ u64 image_key(ImageKeyCache& cache, u64 layer_key, int image) {
    if (image != cache.image) {
        cache.image = image;
        cache.key = derive_key(layer_key, (u64)image);
    }
    return cache.key;
}

// Inverted dropout of one value with probability p (scaled by 1 / (1 - p)
// when kept); G's input dropout (G::DROP_P) unless p is given.
__device__ __forceinline__ float dropout_value_p(float v, u64 layer_key, int image, int j,
                                                 float p) {
    return dropout_keep(layer_key, image, j, p) ? v * (1.0f / (1.0f - p)) : 0.0f;
}

template <class G>
__device__ __forceinline__ float dropout_value(float v, u64 layer_key, int image, int j) {
    return dropout_value_p(v, layer_key, image, j, G::DROP_P);
}

// The same with the image's stream key already derived.
template <class G>
__device__ __forceinline__ float dropout_value_keyed(float v, u64 image_key, int j) {
    constexpr float scale = 1.0f / (1.0f - G::DROP_P);
    return dropout_keep_keyed(image_key, j, G::DROP_P) ? v * scale : 0.0f;
}

template <int ACT>
__device__ __forceinline__ float activate(float x, float slope) {
    if constexpr (ACT == ACT_RELU) {
        return fmaxf(x, 0.0f);
    } else if constexpr (ACT == ACT_LEAKY) {
        return x > 0.0f ? x : slope * x;
    } else {
        return x;
    }
}

// The signal below an activation given the signal `g` above it and `f`, a
// value with the sign of the activation's input (its output for slopes >= 0).
// The mask every gradient kernel applies where it loads the gradient.
template <int ACT>
__device__ __forceinline__ float relu_rule(float g, float f, float slope, int rule) {
    if constexpr (ACT == ACT_NONE) {
        return g;
    } else {
        const float gate_f = f > 0.0f ? 1.0f : slope;
        const float gate_g = g > 0.0f ? 1.0f : slope;
        if (rule == RULE_DECONVNET) {
            return g * gate_g;
        }
        if (rule == RULE_GUIDED) {
            return g * (gate_f * gate_g);
        }
        return g * gate_f;
    }
}

// A thread's share of a walk over TOTAL items spread over the block's
// threads: its slots 0 .. TILE_SLOTS - 1 take items threadIdx.x + slot *
// TILE_THREADS (the last slot where the item exists).
template <int TOTAL>
constexpr int TILE_SLOTS = (TOTAL + TILE_THREADS - 1) / TILE_THREADS;

// Calls at(slot, e) for each of this thread's items e. With UNROLL the loop
// unrolls, so slot is a constant wherever at indexes an array with it: what
// a thread keeps per slot stays in registers (Staged); without, the loop is
// left to the compiler and slot is 0.
template <int TOTAL, bool UNROLL, class At>
__device__ __forceinline__ void for_slots(At at) {
    if constexpr (UNROLL) {
#pragma unroll
        for (int slot = 0; slot < TILE_SLOTS<TOTAL>; ++slot) {
            const int e = (int)threadIdx.x + slot * TILE_THREADS;
            if (TOTAL % TILE_THREADS == 0 || e < TOTAL) {
                at(slot, e);
            }
        }
    } else {
        for (int e = threadIdx.x; e < TOTAL; e += TILE_THREADS) {
            at(0, e);
        }
    }
}

// Calls at(slot, r, c) for every entry of an R x C operand tile, spread over
// the block's threads. Consecutive threads take consecutive c (C_FAST) or
// consecutive r: whichever runs along the operand's contiguous axis in
// global memory, so the gathers coalesce.
template <int R, int C, bool C_FAST, bool UNROLL, class At>
__device__ __forceinline__ void for_tile(At at) {
    for_slots<R * C, UNROLL>([&](int slot, int e) {
        if constexpr (C_FAST) {
            at(slot, e / C, e % C);
        } else {
            at(slot, e % R, e / R);
        }
    });
}

// Calls at(slot, r, c) for every group of four entries (r, c .. c + 3) of an
// R x C operand tile (C a multiple of 4), spread over the block's threads;
// consecutive threads take consecutive groups along c, the operand's
// contiguous axis in global memory, so a warp's 16-byte loads coalesce.
template <int R, int C, bool UNROLL, class At>
__device__ __forceinline__ void for_tile4(At at) {
    static_assert(C % 4 == 0, "groups of four along c");
    for_slots<R * C / 4, UNROLL>(
        [&](int slot, int e) { at(slot, e / (C / 4), 4 * (e % (C / 4))); });
}

// The same with the groups of four along r: at(slot, r, c) for (r .. r + 3,
// c), r a multiple of 4, consecutive threads on consecutive groups along r.
template <int R, int C, bool UNROLL, class At>
__device__ __forceinline__ void for_tile4_rows(At at) {
    static_assert(R % 4 == 0, "groups of four along r");
    for_slots<R / 4 * C, UNROLL>(
        [&](int slot, int e) { at(slot, 4 * (e % (R / 4)), e / (R / 4)); });
}

// The same for the tensor-core tiles, which keep k contiguous in shared
// memory (MmaTiles): groups of four along the tile's non-k axis (c when
// GROUPS_ALONG_C, else r), consecutive threads along the other axis, k. A
// warp then stores BK consecutive k of two groups (rows 20 or 12 words
// apart): every bank once, where threads along the groups' axis would put
// rows 80 or 48 words apart, all on 2 banks (16-way conflicts). Its 16-byte
// loads still fill whole 32-byte sectors where the channels come in
// multiples of 8 (the two groups of one k lie side by side in global
// memory).
template <int R, int C, bool GROUPS_ALONG_C, bool UNROLL, class At>
__device__ __forceinline__ void for_tile4_k_fast(At at) {
    static_assert((GROUPS_ALONG_C ? C : R) % 4 == 0, "groups of four");
    constexpr int K = GROUPS_ALONG_C ? R : C;
    constexpr int GROUPS = (GROUPS_ALONG_C ? C : R) / 4;
    for_slots<K * GROUPS, UNROLL>([&](int slot, int e) {
        const int k = e % K, group = 4 * (e / K);
        if constexpr (GROUPS_ALONG_C) {
            at(slot, k, group);
        } else {
            at(slot, group, k);
        }
    });
}

// for_tile4 (groups along c) or for_tile4_rows (along r), or, with K_FAST,
// for_tile4_k_fast with the same groups.
template <int R, int C, bool GROUPS_ALONG_C, bool K_FAST, bool UNROLL, class At>
__device__ __forceinline__ void for_groups4(At at) {
    if constexpr (K_FAST) {
        for_tile4_k_fast<R, C, GROUPS_ALONG_C, UNROLL>(at);
    } else if constexpr (GROUPS_ALONG_C) {
        for_tile4<R, C, UNROLL>(at);
    } else {
        for_tile4_rows<R, C, UNROLL>(at);
    }
}

// Four floats from a 16-byte aligned address in one load.
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ float4 load4(const float* __restrict__ p) {
    return *reinterpret_cast<const float4*>(p);
}
#else
inline float4 load4(const float* p) { return allcnnc_emu_load4(p); }
#endif

// Stores a group of four values through set(r, c, value): at (r, c .. c + 3)
// when ALONG_C, else at (r .. r + 3, c).
template <bool ALONG_C, class Set>
__device__ __forceinline__ void set4(Set set, int r, int c, float4 v) {
    const float values[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        set(ALONG_C ? r : r + i, ALONG_C ? c + i : c, values[i]);
    }
}

// Where the operand gathers' values go. The operand functions below call
// put4<OP, ALONG_C>(slot, r, c, get) for a group of four values (along c
// when ALONG_C, else along r) of operand OP (0: A, 1: B) and put1<OP>(slot,
// r, c, get) for one; get() gathers the value(s) from global memory.
// StoreNow stores them into the shared tiles at once, through set_a(m, k, v)
// and set_b(k, n, v).
template <class SetA, class SetB>
struct StoreNow {
    static constexpr bool UNROLL = false;
    SetA set_a;
    SetB set_b;
    template <int OP, bool ALONG_C, class Get>
    __device__ __forceinline__ void put4(int, int r, int c, Get get) {
        if constexpr (OP == 0) {
            set4<ALONG_C>(set_a, r, c, get());
        } else {
            set4<ALONG_C>(set_b, r, c, get());
        }
    }
    template <int OP, class Get>
    __device__ __forceinline__ void put1(int, int r, int c, Get get) {
        if constexpr (OP == 0) {
            set_a(r, c, get());
        } else {
            set_b(r, c, get());
        }
    }
};

template <class SetA, class SetB>
__device__ __forceinline__ StoreNow<SetA, SetB> store_now(SetA set_a, SetB set_b) {
    return StoreNow<SetA, SetB>{set_a, set_b};
}

// A thread's operand values of one K step, per slot of the two operands'
// walks, in registers between the gather and the store into shared memory
// (a one-value gather keeps its value in .x). Without ENABLED the K steps
// gather straight into the tiles (StoreStaged) and the arrays, never used,
// cost nothing (their size still covers the walks, so the uncalled gather
// pass indexes within them).
template <int SLOTS_A, int SLOTS_B, bool ENABLED>
struct Staged {
    static constexpr bool ON = ENABLED;
    float4 a[SLOTS_A];
    float4 b[SLOTS_B];
    // Operand OP's (0: A, 1: B) value at `slot`.
    template <int OP>
    __device__ __forceinline__ float4& at(int slot) {
        if constexpr (OP == 0) {
            return a[slot];
        } else {
            return b[slot];
        }
    }
};

// Gathers into a Staged: the global loads issue, and only the arithmetic the
// gather itself applies to the loaded values (a ReLU rule's mask, dropout)
// waits for them before the values are stored (StoreStaged), after the
// next tile step.
template <class S>
struct LoadStaged {
    static constexpr bool UNROLL = true;
    S& stage;
    template <int OP, bool ALONG_C, class Get>
    __device__ __forceinline__ void put4(int slot, int, int, Get get) {
        stage.template at<OP>(slot) = get();
    }
    template <int OP, class Get>
    __device__ __forceinline__ void put1(int slot, int, int, Get get) {
        stage.template at<OP>(slot).x = get();
    }
};

// Stores a Staged's values where StoreNow would have stored them (the same
// walk, so the same slots), without gathering; or, when the Staged is not
// ON, gathers and stores as StoreNow.
template <class S, class SetA, class SetB>
struct StoreStaged {
    static constexpr bool UNROLL = S::ON;
    S& stage;
    StoreNow<SetA, SetB> now;
    template <int OP, bool ALONG_C, class Get>
    __device__ __forceinline__ void put4(int slot, int r, int c, Get get) {
        if constexpr (S::ON) {
            now.template put4<OP, ALONG_C>(slot, r, c,
                                           [&] { return stage.template at<OP>(slot); });
        } else {
            now.template put4<OP, ALONG_C>(slot, r, c, get);
        }
    }
    template <int OP, class Get>
    __device__ __forceinline__ void put1(int slot, int r, int c, Get get) {
        if constexpr (S::ON) {
            now.template put1<OP>(slot, r, c, [&] { return stage.template at<OP>(slot).x; });
        } else {
            now.template put1<OP>(slot, r, c, get);
        }
    }
};

// The K steps [begin, end) of a tensor-core block tile, two deep when the
// Staged S is ON: after the barrier that publishes step k0's tiles, each
// thread issues its gathers of step k0 + BK into registers (gather(k0 +
// BK): a LoadStaged pass) and the warps multiply step k0's tiles (step())
// while those loads are in flight; store(k0 + BK) then puts them into the
// tiles (a StoreStaged pass) once the second barrier says every warp is
// done with the old ones. When it is not, store(k0) gathers and stores.
template <class S, class Gather, class Store, class Step>
__device__ __forceinline__ void pipelined_k_steps(int begin, int end, Gather gather, Store store,
                                                  Step step) {
    if constexpr (S::ON) {
        if (begin < end) {
            gather(begin);
        }
    }
    for (int k0 = begin; k0 < end; k0 += BK) {
        store(k0);
        __syncthreads();
        if constexpr (S::ON) {
            if (k0 + BK < end) {
                gather(k0 + BK);
            }
        }
        step();
        __syncthreads();
    }
}

// Whether a tensor-core kernel stages its operands: where both gathers load
// four values at a time. A one-value gather (conv1's three input channels,
// conv9's ten output channels) would hold 8-16 values with their index
// arithmetic unrolled, which spilled (conv1_forward at 128 registers).
template <bool A_VEC, bool B_VEC, int BM, int BN>
using StagedIf = Staged<TILE_SLOTS<(A_VEC ? BM * BK / 4 : BM * BK)>,
                        TILE_SLOTS<(B_VEC ? BK * BN / 4 : BK * BN)>, A_VEC && B_VEC>;

// One BK-deep step of a block tile: thread (ty, tx) owns rows ty + 16 i and
// columns tx + 16 j, so shared-memory reads are broadcasts along rows and
// consecutive along columns (no bank conflicts).
template <int TM, int TN, int BM, int BN>
__device__ __forceinline__ void tile_step(const float (*As)[BM + 1], const float (*Bs)[BN + 1],
                                          float (&acc)[TM][TN], int tx, int ty) {
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
        float a[TM];
        float b[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            a[i] = As[kk][ty + 16 * i];
        }
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            b[j] = Bs[kk][tx + 16 * j];
        }
#pragma unroll
        for (int i = 0; i < TM; ++i) {
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
        }
    }
}

// The implicit-GEMM operands of the forward convolution: A(m, k) is input
// value (kh, kw, c_in) = k of output pixel m, zero outside the image or the
// GEMM, with the fused input dropout applied; B(k, co) is the HWIO weight.
// With `keys`, the image's dropout key comes from the thread's cache.
//
// Where A(m, k) lies: its image and its index j within the image's values
// (image < 0 where A is zero). Shared by the one-value and the four-value
// gathers.
struct InputAt {
    int image;
    int j;
};

template <class G>
__device__ __forceinline__ InputAt conv_input_index(int m, int k, int rows) {
    constexpr int K = G::KH * G::KW * G::IC;
    constexpr int OUT_PIXELS = G::OH * G::OW;
    if (m >= rows || k >= K) {
        return InputAt{-1, 0};
    }
    const int image = m / OUT_PIXELS, pixel = m % OUT_PIXELS;
    const int ci = k % G::IC, tap = k / G::IC;
    const int ih = (pixel / G::OW) * G::SH - G::PT + tap / G::KW;
    const int iw = (pixel % G::OW) * G::SW - G::PL + tap % G::KW;
    if (ih < 0 || ih >= G::IH || iw < 0 || iw >= G::IW) {
        return InputAt{-1, 0};
    }
    return InputAt{image, (ih * G::IW + iw) * G::IC + ci};
}

template <class G>
__device__ __forceinline__ float conv_input_at(const float* __restrict__ x, int m, int k, int rows,
                                               bool drop, u64 drop_key,
                                               ImageKeyCache* keys = nullptr) {
    constexpr int IN_LEN = G::IH * G::IW * G::IC;
    const InputAt at = conv_input_index<G>(m, k, rows);
    if (at.image < 0) {
        return 0.0f;
    }
    const float v = x[(size_t)at.image * IN_LEN + at.j];
    if (!drop) {
        return v;
    }
    return keys ? dropout_value_keyed<G>(v, image_key(*keys, drop_key, at.image), at.j)
                : dropout_value<G>(v, drop_key, at.image, at.j);
}

// Offset of weight (k, co) in the HWIO weights, or -1 outside the GEMM.
template <class G>
__device__ __forceinline__ int conv_weight_index(int k, int co) {
    constexpr int K = G::KH * G::KW * G::IC;
    return (k < K && co < G::OC) ? k * G::OC + co : -1;
}

template <class G>
__device__ __forceinline__ float conv_weight_at(const float* __restrict__ w, int k, int co) {
    const int at = conv_weight_index<G>(k, co);
    return at < 0 ? 0.0f : w[at];
}

// Operand loads four at a time. A K-group k .. k + 3 (k a multiple of 4)
// lies within one tap when C_in is a multiple of 4, so its four input
// values sit side by side (one bounds check, one address, one 16-byte
// load: the input buffer and an image's values start 16-byte aligned);
// four output channels of a weight row likewise when C_out is a multiple
// of 4 and the weight's offset in the parameters is (W_VEC). Zeros where
// conv_input_at and conv_weight_at give zeros; dropout per value as there.
template <class G>
constexpr bool INPUT_VEC = G::IC % 4 == 0;

template <class G>
__device__ __forceinline__ float4 conv_input4_at(const float* __restrict__ x, int m, int k,
                                                 int rows, bool drop, u64 drop_key,
                                                 ImageKeyCache& keys) {
    static_assert(INPUT_VEC<G>, "groups of four channels");
    constexpr int IN_LEN = G::IH * G::IW * G::IC;
    const InputAt at = conv_input_index<G>(m, k, rows);
    if (at.image < 0) {
        return float4{0.0f, 0.0f, 0.0f, 0.0f};
    }
    float4 v = load4(x + (size_t)at.image * IN_LEN + at.j);
    if (drop) {
        const u64 key = image_key(keys, drop_key, at.image);
        v.x = dropout_value_keyed<G>(v.x, key, at.j);
        v.y = dropout_value_keyed<G>(v.y, key, at.j + 1);
        v.z = dropout_value_keyed<G>(v.z, key, at.j + 2);
        v.w = dropout_value_keyed<G>(v.w, key, at.j + 3);
    }
    return v;
}

template <class G>
__device__ __forceinline__ float4 conv_weight4_at(const float* __restrict__ w, int k, int co) {
    static_assert(G::W_VEC, "groups of four output channels");
    const int at = conv_weight_index<G>(k, co);
    return at < 0 ? float4{0.0f, 0.0f, 0.0f, 0.0f} : load4(w + at);
}

// The forward kernels' operand tiles for one K step: A (BM x BK, input
// gathered) and B (BK x BN, weights), each four at a time where the shapes
// allow, put into `sink` (StoreNow, LoadStaged or StoreStaged); K_FAST for
// the tensor-core tiles (consecutive threads along k, see for_tile4_k_fast).
template <class G, int BM, int BN, bool K_FAST, class Sink>
__device__ __forceinline__ void conv_forward_operands(const float* __restrict__ x,
                                                      const float* __restrict__ w, int m0,
                                                      int n0, int k0, int rows, bool drop,
                                                      u64 drop_key, ImageKeyCache& keys,
                                                      Sink sink) {
    if constexpr (INPUT_VEC<G>) {
        for_tile4<BM, BK, Sink::UNROLL>([&](int slot, int mm, int kk) {
            sink.template put4<0, true>(slot, mm, kk, [&] {
                return conv_input4_at<G>(x, m0 + mm, k0 + kk, rows, drop, drop_key, keys);
            });
        });
    } else {
        for_tile<BM, BK, true, Sink::UNROLL>([&](int slot, int mm, int kk) {
            sink.template put1<0>(slot, mm, kk, [&] {
                return conv_input_at<G>(x, m0 + mm, k0 + kk, rows, drop, drop_key, &keys);
            });
        });
    }
    if constexpr (G::W_VEC) {
        for_groups4<BK, BN, true, K_FAST, Sink::UNROLL>([&](int slot, int kk, int nn) {
            sink.template put4<1, true>(slot, kk, nn,
                                        [&] { return conv_weight4_at<G>(w, k0 + kk, n0 + nn); });
        });
    } else {
        for_tile<BK, BN, !K_FAST, Sink::UNROLL>([&](int slot, int kk, int nn) {
            sink.template put1<1>(slot, kk, nn,
                                  [&] { return conv_weight_at<G>(w, k0 + kk, n0 + nn); });
        });
    }
}

// The registers a thread stages the forward operands of one K step in.
template <class G, int BM, int BN>
using ForwardStaged = StagedIf<INPUT_VEC<G>, G::W_VEC, BM, BN>;

// The forward epilogue of output (m, co): bias, the pre-activation where the
// backward pass needs it, the activation, and in training the dropout of
// the conv group above when that group takes its input dropped
// (OUT_DROPOUT): decided here once per value, with the draw the group above
// would make where it gathers the value (image m / pixels, value
// pixel * OC + co), so the values are those it would compute.
template <class G>
__device__ __forceinline__ void conv_store(float v, int m, int co, const float* __restrict__ bias,
                                           float* __restrict__ y, float* __restrict__ pre,
                                           bool drop_out, u64 out_drop_key) {
    if constexpr (G::BIAS) {
        v += bias[co];
    }
    const size_t at = (size_t)m * G::OC + co;
    if constexpr (G::KEEP_PRE) {
        pre[at] = v;
    }
    v = activate<G::ACT>(v, G::SLOPE);
    if constexpr (G::OUT_DROPOUT) {
        if (drop_out) {
            constexpr int OUT_PIXELS = G::OH * G::OW;
            v = dropout_value_p(v, out_drop_key, m / OUT_PIXELS, (m % OUT_PIXELS) * G::OC + co,
                                G::OUT_DROP_P);
        }
    }
    y[at] = v;
}

// Convolution forward as an implicit GEMM: rows are output pixels
// (image, oh, ow), columns output channels, K runs over (kh, kw, c_in).
// The input is gathered into shared memory tile by tile (zero padding and
// the fused input dropout applied on load); the epilogue adds the bias,
// keeps the pre-activation when the backward pass needs it and applies the
// activation.
template <class G>
__device__ __forceinline__ void conv_forward(const float* __restrict__ x, const float* __restrict__ w,
                                             const float* __restrict__ bias, float* __restrict__ y,
                                             float* __restrict__ pre, int n, u64 drop_key,
                                             int training, u64 out_drop_key) {
    constexpr int TM = G::TM, TN = G::TN, BM = 16 * TM, BN = 16 * TN;
    constexpr int K = G::KH * G::KW * G::IC;
    constexpr int OUT_PIXELS = G::OH * G::OW;
    __shared__ float As[BK][BM + 1];
    __shared__ float Bs[BK][BN + 1];
    const int rows = n * OUT_PIXELS;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const bool drop = G::DROPOUT && !G::IN_DROPPED && training;
    ImageKeyCache keys{-1, 0ULL};
    float acc[TM][TN] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        conv_forward_operands<G, BM, BN, false>(
            x, w, m0, n0, k0, rows, drop, drop_key, keys,
            store_now([&](int mm, int kk, float v) { As[kk][mm] = v; },
                      [&](int kk, int nn, float v) { Bs[kk][nn] = v; }));
        __syncthreads();
        tile_step<TM, TN, BM, BN>(As, Bs, acc, tx, ty);
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= rows) {
            continue;
        }
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int co = n0 + tx + 16 * j;
            if (co >= G::OC) {
                continue;
            }
            conv_store<G>(acc[i][j], m, co, bias, y, pre, training, out_drop_key);
        }
    }
}

// Tensor cores: warp-wide mma.sync through inline PTX (no header needed,
// so NVRTC compiles it with only the CUDA headers). Fragment layouts are the
// PTX ISA's (9.7.14.5.x): with g = lane / 4 and t = lane % 4, a thread holds
// A (16 x K, row-major) elements at rows g, g + 8; B (K x 8, column-major)
// at column g; C/D (16 x 8) at rows g, g + 8 and columns 2t, 2t + 1. A host
// build (the emulator) gets the same functions from its shim.
constexpr int PREC_TF32 = 1;
constexpr int PREC_BF16 = 2;

#if defined(__CUDA_ARCH__)
// fp32 -> tf32 (round to nearest, ties away), in a 32-bit register.
__device__ __forceinline__ unsigned to_tf32(float v) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

// fp32 -> bf16 (round to nearest even), the 16 bits.
__device__ __forceinline__ unsigned short to_bf16(float v) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(v));
    return r;
}

// ldmatrix.m8n8.xN.b16: lanes 8j .. 8j + 7 give the 16-byte aligned rows of
// matrix j in shared memory; lane i receives in d[j] the 32 bits at row
// i / 4, bytes 4 (i % 4) .. 4 (i % 4) + 3 of matrix j: an mma fragment
// register whatever the element type (two bf16, or one tf32).
template <int N>
__device__ __forceinline__ void ldmatrix(unsigned (&d)[N], const void* row) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(row);
    if constexpr (N == 4) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                     : "r"(a)
                     : "memory");
    } else {
        static_assert(N == 2, "x2 or x4");
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                     : "=r"(d[0]), "=r"(d[1])
                     : "r"(a)
                     : "memory");
    }
}

// d = a (16x8 tf32) * b (8x8 tf32) + d, fp32 accumulation.
__device__ __forceinline__ void mma_tf32(float (&d)[4], const unsigned (&a)[4],
                                         const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d = a (16x16 bf16) * b (16x8 bf16) + d, fp32 accumulation.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4],
                                         const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else
inline unsigned to_tf32(float v) { return allcnnc_emu_to_tf32(v); }
inline unsigned short to_bf16(float v) { return (unsigned short)allcnnc_emu_bf16(v); }
template <int N>
inline void ldmatrix(unsigned (&d)[N], const void* row) {
    allcnnc_emu_ldmatrix(d, row);
}
inline void mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    allcnnc_emu_mma_tf32(d, a, b);
}
inline void mma_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    allcnnc_emu_mma_bf16(d, a, b);
}
#endif

// A thread's place in a tensor-core block tile of BM x BN: 8 warps in 4 x 2,
// warp (wm, wn) owning (BM / 64) x (BN / 16) mma tiles of 16 x 8 from row wm
// and column wn; g = lane / 4, t = lane % 4 (the PTX fragment layouts).
struct MmaWarp {
    int wm, wn, g, t;
};

template <int BM, int BN>
__device__ __forceinline__ MmaWarp mma_warp() {
    static_assert(BM >= 64 && BN >= 16 && BK % 16 == 0, "tile too small for 4 x 2 warps");
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    return MmaWarp{(warp % 4) * (BM / 4), (warp / 4) * (BN / 2), lane / 4, lane % 4};
}

// Calls f(row, column, value) for each accumulator value the thread holds,
// row and column within the block tile.
template <int BM, int BN, class F>
__device__ __forceinline__ void mma_for_each(const float (&acc)[BM / 64][BN / 16][4], MmaWarp w,
                                             F f) {
#pragma unroll
    for (int i = 0; i < BM / 64; ++i) {
#pragma unroll
        for (int j = 0; j < BN / 16; ++j) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                f(w.wm + 16 * i + w.g + 8 * (r / 2), w.wn + 8 * j + 2 * w.t + r % 2, acc[i][j][r]);
            }
        }
    }
}

// The shared operand tiles of a tensor-core block tile, holding what
// mma.sync takes: the gathers convert each value once as they store it, so
// the fragment loads of every warp read ready operands. Both tiles keep k
// contiguous, A as a[m][k] and B transposed as b[n][k], so that every
// fragment comes from 8 x 16-byte matrices that one ldmatrix loads: tf32
// bits in 32-bit words (rows of BK + 4 words), or bf16 halves (rows of
// BK + 8 halves, half the bytes of fp32 tiles). The pads make rows 20 or 12
// words apart, so the 8 rows of a matrix fall on distinct banks, and keep
// each row 16-byte aligned.
template <int PREC, int BM, int BN>
struct MmaTiles;

template <int BM, int BN>
struct alignas(16) MmaTiles<PREC_TF32, BM, BN> {
    // k per mma, and k per 16-byte matrix row.
    static constexpr int MMA_K = 8, ROW_K = 4;
    unsigned a[BM][BK + 4];
    unsigned b[BN][BK + 4];
    __device__ __forceinline__ void set_a(int m, int k, float v) { a[m][k] = to_tf32(v); }
    __device__ __forceinline__ void set_b(int k, int n, float v) { b[n][k] = to_tf32(v); }
};

template <int BM, int BN>
struct alignas(16) MmaTiles<PREC_BF16, BM, BN> {
    static constexpr int MMA_K = 16, ROW_K = 8;
    unsigned short a[BM][BK + 8];
    unsigned short b[BN][BK + 8];
    __device__ __forceinline__ void set_a(int m, int k, float v) { a[m][k] = to_bf16(v); }
    __device__ __forceinline__ void set_b(int k, int n, float v) { b[n][k] = to_bf16(v); }
};

// One BK-deep step of a tensor-core block tile (see MmaWarp) over the
// shared tiles. Per mma's k: each A fragment (16 rows) is one ldmatrix.x4
// of the matrices (rows 0-7, first half of k), (rows 8-15, first half),
// (rows 0-7, second half), (rows 8-15, second half), i.e. registers 0-3;
// B fragments (8 columns) two at a time, one ldmatrix.x4 of (columns j,
// first half), (j, second half), (j + 1, first), (j + 1, second), or one
// .x2 when a warp has a single one.
template <int PREC, int BM, int BN>
__device__ __forceinline__ void mma_tile_step(const MmaTiles<PREC, BM, BN>& s,
                                              float (&acc)[BM / 64][BN / 16][4], MmaWarp w) {
    using Tiles = MmaTiles<PREC, BM, BN>;
    constexpr int FM = BM / 64, FN = BN / 16;
    const int lane = threadIdx.x % 32;
    // The row this lane gives, and the k of its matrix's first column.
    const int a_row = lane % 8 + 8 * (lane / 8 % 2), a_k = Tiles::ROW_K * (lane / 16);
    const int b_col = lane % 8 + 8 * (lane / 16), b_k = Tiles::ROW_K * (lane / 8 % 2);
#pragma unroll
    for (int kk = 0; kk < BK; kk += Tiles::MMA_K) {
        unsigned a[FM][4], b[FN][2];
#pragma unroll
        for (int i = 0; i < FM; ++i) {
            ldmatrix(a[i], &s.a[w.wm + 16 * i + a_row][kk + a_k]);
        }
        if constexpr (FN % 2 == 0) {
#pragma unroll
            for (int j = 0; j < FN; j += 2) {
                unsigned q[4];
                ldmatrix(q, &s.b[w.wn + 8 * j + b_col][kk + b_k]);
                b[j][0] = q[0];
                b[j][1] = q[1];
                b[j + 1][0] = q[2];
                b[j + 1][1] = q[3];
            }
        } else {
#pragma unroll
            for (int j = 0; j < FN; ++j) {
                ldmatrix(b[j], &s.b[w.wn + 8 * j + lane % 8][kk + b_k]);
            }
        }
#pragma unroll
        for (int i = 0; i < FM; ++i) {
#pragma unroll
            for (int j = 0; j < FN; ++j) {
                if constexpr (PREC == PREC_TF32) {
                    mma_tf32(acc[i][j], a[i], b[j]);
                } else {
                    mma_bf16(acc[i][j], a[i], b[j]);
                }
            }
        }
    }
}

// Convolution forward as an implicit GEMM on tensor cores (PREC_TF32 or
// PREC_BF16 inputs, fp32 accumulation): the same tiles, gather, fused input
// dropout and epilogue as conv_forward, but the shared tiles are MmaTiles
// (operands converted as they are stored) and the 8 warps share the tile as
// MmaWarp says. No thread leaves early: mma.sync needs the whole warp.
template <class G, int PREC>
__device__ __forceinline__ void conv_forward_mma(const float* __restrict__ x,
                                                 const float* __restrict__ w,
                                                 const float* __restrict__ bias,
                                                 float* __restrict__ y, float* __restrict__ pre,
                                                 int n, u64 drop_key, int training,
                                                 u64 out_drop_key) {
    constexpr int BM = 16 * G::TM, BN = 16 * G::TN;
    constexpr int K = G::KH * G::KW * G::IC;
    constexpr int OUT_PIXELS = G::OH * G::OW;
    __shared__ MmaTiles<PREC, BM, BN> tiles;
    const int rows = n * OUT_PIXELS;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const MmaWarp warp = mma_warp<BM, BN>();
    const bool drop = G::DROPOUT && !G::IN_DROPPED && training;
    ImageKeyCache keys{-1, 0ULL};
    float acc[BM / 64][BN / 16][4] = {};
    using Stage = ForwardStaged<G, BM, BN>;
    Stage stage;
    const auto set_a = [&](int mm, int kk, float v) { tiles.set_a(mm, kk, v); };
    const auto set_b = [&](int kk, int nn, float v) { tiles.set_b(kk, nn, v); };
    pipelined_k_steps<Stage>(
        0, K,
        [&](int k0) {
            conv_forward_operands<G, BM, BN, true>(x, w, m0, n0, k0, rows, drop, drop_key, keys,
                                                   LoadStaged<Stage>{stage});
        },
        [&](int k0) {
            conv_forward_operands<G, BM, BN, true>(
                x, w, m0, n0, k0, rows, drop, drop_key, keys,
                StoreStaged<Stage, decltype(set_a), decltype(set_b)>{stage, {set_a, set_b}});
        },
        [&] { mma_tile_step(tiles, acc, warp); });
    mma_for_each<BM, BN>(acc, warp, [&](int row, int col, float v) {
        if (m0 + row < rows && n0 + col < G::OC) {
            conv_store<G>(v, m0 + row, n0 + col, bias, y, pre, training, out_drop_key);
        }
    });
}

// One phase of the gradient with respect to the input of a strided
// convolution: the input pixels (ih, iw) = (py + SH a, px + SW b), which only
// the taps kh = rh + SH t (kw = rw + SW u) reach, with rh = (py + PT) mod SH:
// from output row oh = a + OY - t (OY = (py + PT - rh) / SH), and likewise
// along the width. The backward-data GEMM runs one phase per blockIdx.z,
// over its own taps only, so a stride-2 3x3 convolution multiplies its 9
// taps once (4 + 2 + 2 + 1 over the four phases) instead of all 9 for every
// input pixel. With stride 1 there is one phase, the whole input and every
// tap, and all of it is a compile-time constant.
struct DataPhase {
    int py, px;      // the phase's first input row and column
    int ah, aw;      // its rows and columns: ceil((IH - py) / SH), ...
    int rh, rw;      // its first taps
    int th, tw;      // its taps along each axis: ceil((KH - rh) / SH), ...
    int oy, ox;      // OY and OX above
    int pixels;      // ah * aw
    int k;           // depth of its GEMM: th * tw * OC
};

__device__ __forceinline__ int phase_count(int size, int first, int stride) {
    return size > first ? (size - first + stride - 1) / stride : 0;
}

template <class G>
__device__ __forceinline__ DataPhase data_phase() {
    const int z = G::SH * G::SW == 1 ? 0 : (int)blockIdx.z;
    DataPhase p;
    p.py = z / G::SW;
    p.px = z % G::SW;
    p.ah = phase_count(G::IH, p.py, G::SH);
    p.aw = phase_count(G::IW, p.px, G::SW);
    p.rh = (p.py + G::PT) % G::SH;
    p.rw = (p.px + G::PL) % G::SW;
    p.th = phase_count(G::KH, p.rh, G::SH);
    p.tw = phase_count(G::KW, p.rw, G::SW);
    p.oy = (p.py + G::PT - p.rh) / G::SH;
    p.ox = (p.px + G::PL - p.rw) / G::SW;
    p.pixels = p.ah * p.aw;
    p.k = p.th * p.tw * G::OC;
    return p;
}

// The image and the pixel index within it (ih * IW + iw) of row m of a
// phase's GEMM.
__device__ __forceinline__ void phase_pixel(const DataPhase& p, int sh, int sw, int iw_size, int m,
                                            int* image, int* pixel) {
    const int r = m % p.pixels;
    *image = m / p.pixels;
    *pixel = (p.py + sh * (r / p.aw)) * iw_size + p.px + sw * (r % p.aw);
}

// relu_rule of four gradients d and their activations f.
template <class G>
__device__ __forceinline__ float4 relu_rule4(float4 d, float4 f, int rule) {
    return float4{relu_rule<G::ACT>(d.x, f.x, G::SLOPE, rule),
                  relu_rule<G::ACT>(d.y, f.y, G::SLOPE, rule),
                  relu_rule<G::ACT>(d.z, f.z, G::SLOPE, rule),
                  relu_rule<G::ACT>(d.w, f.w, G::SLOPE, rule)};
}

// The signal below a conv group's activation at offset `at` of its output,
// as the group's backward kernels load it. Where the kernel that wrote the
// gradient applied the activation's rule already (DY_MASKED: the backward
// data kernel of the conv group above, in its epilogue) the value is loaded
// as it is, and `f` is not read: one load per value, and nothing waits for
// it before the tile step (the staged K loop's loads stay in flight across
// the mma). Elsewhere (a pool, the head or a caller's signal wrote it) the
// rule is applied here, with the activation `f`.
template <class G>
__device__ __forceinline__ float grad_below_act(const float* __restrict__ dy,
                                                const float* __restrict__ f, long long at,
                                                int rule) {
    if constexpr (G::DY_MASKED) {
        return dy[at];
    } else {
        return relu_rule<G::ACT>(dy[at], f[at], G::SLOPE, rule);
    }
}

template <class G>
__device__ __forceinline__ float4 grad4_below_act(const float* __restrict__ dy,
                                                  const float* __restrict__ f, long long at,
                                                  int rule) {
    if constexpr (G::DY_MASKED) {
        return load4(dy + at);
    } else {
        return relu_rule4<G>(load4(dy + at), load4(f + at), rule);
    }
}

// The epilogue's rule of the activation below (IN_ACT: the conv group whose
// output is this group's input, when it is one whose kernels take their
// gradient masked, DY_MASKED): applied to the gradient `v` at input offset
// `at` with that activation `x` (this group's input), after the input
// dropout's mask, exactly as that group's kernels would on load.
template <class G>
__device__ __forceinline__ float rule_of_input_act(float v, const float* __restrict__ x,
                                                   size_t at, int rule) {
    if constexpr (G::IN_ACT == ACT_NONE) {
        return v;
    } else {
        return relu_rule<G::IN_ACT>(v, x[at], G::IN_SLOPE, rule);
    }
}

// The implicit-GEMM operands of the gradient with respect to the input, in
// phase p: A(m, k) is the output gradient that reaches the phase's input
// pixel m through its tap and output channel k = (t, u, c_out), masked by
// the activation with the pass's ReLU rule (grad_below_act; zero where the
// tap falls outside the output); B(k, ci) is the weight of (kh, kw, ci, c_out).
//
// Offset of A(m, k) in the output gradient (and the activation), or -1
// where A is zero.
template <class G>
__device__ __forceinline__ long long conv_grad_index(const DataPhase& p, int m, int k, int rows) {
    constexpr int OUT_LEN = G::OH * G::OW * G::OC;
    if (m >= rows || k >= p.k) {
        return -1;
    }
    const int image = m / p.pixels, r = m % p.pixels;
    const int co = k % G::OC, tap = k / G::OC;
    const int oh = r / p.aw + p.oy - tap / p.tw;
    const int ow = r % p.aw + p.ox - tap % p.tw;
    if (oh < 0 || ow < 0 || oh >= G::OH || ow >= G::OW) {
        return -1;
    }
    return (long long)image * OUT_LEN + (oh * G::OW + ow) * G::OC + co;
}

template <class G>
__device__ __forceinline__ float conv_grad_at(const float* __restrict__ dy,
                                              const float* __restrict__ f, const DataPhase& p,
                                              int m, int k, int rows, int rule) {
    const long long at = conv_grad_index<G>(p, m, k, rows);
    return at < 0 ? 0.0f : grad_below_act<G>(dy, f, at, rule);
}

// Offset of B(k, ci) in the HWIO weights, or -1 outside the phase's GEMM.
template <class G>
__device__ __forceinline__ int conv_weight_t_index(const DataPhase& p, int k, int ci) {
    if (k >= p.k || ci >= G::IC) {
        return -1;
    }
    const int co = k % G::OC, tap = k / G::OC;
    const int kh = p.rh + G::SH * (tap / p.tw), kw = p.rw + G::SW * (tap % p.tw);
    return ((kh * G::KW + kw) * G::IC + ci) * G::OC + co;
}

template <class G>
__device__ __forceinline__ float conv_weight_t_at(const float* __restrict__ w, const DataPhase& p,
                                                  int k, int ci) {
    const int at = conv_weight_t_index<G>(p, k, ci);
    return at < 0 ? 0.0f : w[at];
}

// Four at a time when C_out is a multiple of 4: a K-group k .. k + 3 of
// the backward-data GEMM shares its tap (four output channels side by side
// in the gradient, the activation and a weight row).
template <class G>
constexpr bool OUTPUT_VEC = G::OC % 4 == 0;

template <class G>
__device__ __forceinline__ float4 conv_grad4_at(const float* __restrict__ dy,
                                                const float* __restrict__ f, const DataPhase& p,
                                                int m, int k, int rows, int rule) {
    static_assert(OUTPUT_VEC<G>, "groups of four output channels");
    const long long at = conv_grad_index<G>(p, m, k, rows);
    return at < 0 ? float4{0.0f, 0.0f, 0.0f, 0.0f} : grad4_below_act<G>(dy, f, at, rule);
}

template <class G>
__device__ __forceinline__ float4 conv_weight_t4_at(const float* __restrict__ w,
                                                    const DataPhase& p, int k, int ci) {
    static_assert(G::W_VEC, "groups of four output channels");
    const int at = conv_weight_t_index<G>(p, k, ci);
    return at < 0 ? float4{0.0f, 0.0f, 0.0f, 0.0f} : load4(w + at);
}

// The backward-data kernels' operand tiles for one K step of phase p, four
// at a time where the shapes allow, put into `sink` (as
// conv_forward_operands).
template <class G, int BM, int BN, class Sink>
__device__ __forceinline__ void conv_data_operands(const float* __restrict__ dy,
                                                   const float* __restrict__ f,
                                                   const float* __restrict__ w,
                                                   const DataPhase& phase, int m0, int n0, int k0,
                                                   int rows, int rule, Sink sink) {
    if constexpr (OUTPUT_VEC<G>) {
        for_tile4<BM, BK, Sink::UNROLL>([&](int slot, int mm, int kk) {
            sink.template put4<0, true>(slot, mm, kk, [&] {
                return conv_grad4_at<G>(dy, f, phase, m0 + mm, k0 + kk, rows, rule);
            });
        });
    } else {
        for_tile<BM, BK, true, Sink::UNROLL>([&](int slot, int mm, int kk) {
            sink.template put1<0>(slot, mm, kk, [&] {
                return conv_grad_at<G>(dy, f, phase, m0 + mm, k0 + kk, rows, rule);
            });
        });
    }
    if constexpr (G::W_VEC) {
        for_tile4_rows<BK, BN, Sink::UNROLL>([&](int slot, int kk, int nn) {
            sink.template put4<1, false>(slot, kk, nn, [&] {
                return conv_weight_t4_at<G>(w, phase, k0 + kk, n0 + nn);
            });
        });
    } else {
        for_tile<BK, BN, false, Sink::UNROLL>([&](int slot, int kk, int nn) {
            sink.template put1<1>(slot, kk, nn,
                                  [&] { return conv_weight_t_at<G>(w, phase, k0 + kk, n0 + nn); });
        });
    }
}

// The registers a thread stages the backward-data operands of one K step in.
template <class G, int BM, int BN>
using DataStaged = StagedIf<OUTPUT_VEC<G>, G::W_VEC, BM, BN>;

// Gradient with respect to the input as an implicit GEMM per phase
// (blockIdx.z; see DataPhase): rows are the phase's input pixels (image,
// a, b), columns input channels, K runs over the phase's (t, u, c_out).
// The gradient at the output is loaded through the activation's mask (with
// the pass's ReLU rule) unless its producer applied it (grad_below_act); the
// epilogue applies the fused input dropout's mask in training, then the
// rule of the activation below (rule_of_input_act, reading the input `x`).
// A phase with fewer pixels than the grid covers leaves
// its surplus blocks idle; one no tap reaches writes zeros.
template <class G>
__device__ __forceinline__ void conv_backward_data(const float* __restrict__ dy,
                                                   const float* __restrict__ f,
                                                   const float* __restrict__ w,
                                                   const float* __restrict__ x,
                                                   float* __restrict__ dx, int n, u64 drop_key,
                                                   int training, int rule) {
    constexpr int TM = G::BTM, TN = G::BTN, BM = 16 * TM, BN = 16 * TN;
    __shared__ float As[BK][BM + 1];
    __shared__ float Bs[BK][BN + 1];
    const DataPhase phase = data_phase<G>();
    const int rows = n * phase.pixels;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    if (m0 >= rows) {
        return;
    }
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[TM][TN] = {};
    for (int k0 = 0; k0 < phase.k; k0 += BK) {
        conv_data_operands<G, BM, BN>(
            dy, f, w, phase, m0, n0, k0, rows, rule,
            store_now([&](int mm, int kk, float v) { As[kk][mm] = v; },
                      [&](int kk, int nn, float v) { Bs[kk][nn] = v; }));
        __syncthreads();
        tile_step<TM, TN, BM, BN>(As, Bs, acc, tx, ty);
        __syncthreads();
    }
    const bool drop = G::DROPOUT && training;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= rows) {
            continue;
        }
        int image, pixel;
        phase_pixel(phase, G::SH, G::SW, G::IW, m, &image, &pixel);
        const u64 image_key = drop ? derive_key(drop_key, (u64)image) : 0ULL;
        const size_t base = ((size_t)image * G::IH * G::IW + pixel) * G::IC;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int ci = n0 + tx + 16 * j;
            if (ci >= G::IC) {
                continue;
            }
            float v = acc[i][j];
            if (drop) {
                v = dropout_value_keyed<G>(v, image_key, pixel * G::IC + ci);
            }
            dx[base + ci] = rule_of_input_act<G>(v, x, base + ci, rule);
        }
    }
}

// conv_backward_data on tensor cores (PREC_TF32 or PREC_BF16 inputs, fp32
// accumulation): the operands of conv_grad_at / conv_weight_t_at in the
// shared tiles of mma_tile_step (MmaTiles), the dropout mask in the epilogue.
// Blocks past the phase's rows leave as a whole (every warp of the block),
// so mma.sync still sees whole warps.
template <class G, int PREC>
__device__ __forceinline__ void conv_backward_data_mma(const float* __restrict__ dy,
                                                       const float* __restrict__ f,
                                                       const float* __restrict__ w,
                                                       const float* __restrict__ x,
                                                       float* __restrict__ dx, int n, u64 drop_key,
                                                       int training, int rule) {
    constexpr int BM = 16 * G::BTM, BN = 16 * G::BTN;
    __shared__ MmaTiles<PREC, BM, BN> tiles;
    const DataPhase phase = data_phase<G>();
    const int rows = n * phase.pixels;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    if (m0 >= rows) {
        return;
    }
    const MmaWarp warp = mma_warp<BM, BN>();
    float acc[BM / 64][BN / 16][4] = {};
    using Stage = DataStaged<G, BM, BN>;
    Stage stage;
    const auto set_a = [&](int mm, int kk, float v) { tiles.set_a(mm, kk, v); };
    const auto set_b = [&](int kk, int nn, float v) { tiles.set_b(kk, nn, v); };
    pipelined_k_steps<Stage>(
        0, phase.k,
        [&](int k0) {
            conv_data_operands<G, BM, BN>(dy, f, w, phase, m0, n0, k0, rows, rule,
                                          LoadStaged<Stage>{stage});
        },
        [&](int k0) {
            conv_data_operands<G, BM, BN>(
                dy, f, w, phase, m0, n0, k0, rows, rule,
                StoreStaged<Stage, decltype(set_a), decltype(set_b)>{stage, {set_a, set_b}});
        },
        [&] { mma_tile_step(tiles, acc, warp); });
    const bool drop = G::DROPOUT && training;
    mma_for_each<BM, BN>(acc, warp, [&](int row, int col, float v) {
        const int m = m0 + row, ci = n0 + col;
        if (m < rows && ci < G::IC) {
            int image, pixel;
            phase_pixel(phase, G::SH, G::SW, G::IW, m, &image, &pixel);
            if (drop) {
                v = dropout_value<G>(v, drop_key, image, pixel * G::IC + ci);
            }
            const size_t at = ((size_t)image * G::IH * G::IW + pixel) * G::IC + ci;
            dx[at] = rule_of_input_act<G>(v, x, at, rule);
        }
    });
}

// B(k, co) of the weight-gradient GEMM: the output gradient of output pixel
// row k (of the batch) and channel co through the activation's mask. Its
// offset in the output gradient (and the activation), or -1 where B is
// zero:
template <class G>
__device__ __forceinline__ long long conv_dy_index(int k, int co, int k_end) {
    return (k < k_end && co < G::OC) ? (long long)k * G::OC + co : -1;
}

template <class G>
__device__ __forceinline__ float conv_dy_at(const float* __restrict__ dy,
                                            const float* __restrict__ f, int k, int co, int k_end) {
    const long long at = conv_dy_index<G>(k, co, k_end);
    return at < 0 ? 0.0f : grad_below_act<G>(dy, f, at, RULE_BACKPROP);
}

template <class G>
__device__ __forceinline__ float4 conv_dy4_at(const float* __restrict__ dy,
                                              const float* __restrict__ f, int k, int co,
                                              int k_end) {
    static_assert(OUTPUT_VEC<G>, "groups of four output channels");
    const long long at = conv_dy_index<G>(k, co, k_end);
    return at < 0 ? float4{0.0f, 0.0f, 0.0f, 0.0f}
                  : grad4_below_act<G>(dy, f, at, RULE_BACKPROP);
}

// The weight-gradient kernels' operand tiles for one K step (K = the
// batch's output pixels, ending at k_end): A is the forward GEMM's A
// transposed (row m is its k), B the output gradient through the
// activation's mask; four at a time along the channels where the shapes
// allow (the input's four channels of one tap; four output channels).
// Dropout keys are derived once per group of four, not cached across
// groups (a cache's registers made the fp32 kernels spill). K_FAST as in
// conv_forward_operands.
template <class G, int BM, int BN, bool K_FAST, class Sink>
__device__ __forceinline__ void conv_weights_operands(const float* __restrict__ x,
                                                      const float* __restrict__ dy,
                                                      const float* __restrict__ f, int m0,
                                                      int n0, int k0, int k_end, bool drop,
                                                      u64 drop_key, Sink sink) {
    if constexpr (INPUT_VEC<G>) {
        for_groups4<BM, BK, false, K_FAST, Sink::UNROLL>([&](int slot, int mm, int kk) {
            sink.template put4<0, false>(slot, mm, kk, [&] {
                ImageKeyCache keys{-1, 0ULL};
                return conv_input4_at<G>(x, k0 + kk, m0 + mm, k_end, drop, drop_key, keys);
            });
        });
    } else {
        for_tile<BM, BK, K_FAST, Sink::UNROLL>([&](int slot, int mm, int kk) {
            sink.template put1<0>(slot, mm, kk, [&] {
                return conv_input_at<G>(x, k0 + kk, m0 + mm, k_end, drop, drop_key);
            });
        });
    }
    if constexpr (OUTPUT_VEC<G>) {
        for_groups4<BK, BN, true, K_FAST, Sink::UNROLL>([&](int slot, int kk, int nn) {
            sink.template put4<1, true>(slot, kk, nn, [&] {
                return conv_dy4_at<G>(dy, f, k0 + kk, n0 + nn, k_end);
            });
        });
    } else {
        for_tile<BK, BN, !K_FAST, Sink::UNROLL>([&](int slot, int kk, int nn) {
            sink.template put1<1>(slot, kk, nn,
                                  [&] { return conv_dy_at<G>(dy, f, k0 + kk, n0 + nn, k_end); });
        });
    }
}

// The registers a thread stages the weight-gradient operands of one K step
// in.
template <class G, int BM, int BN>
using WeightsStaged = StagedIf<INPUT_VEC<G>, OUTPUT_VEC<G>, BM, BN>;

// Where a weight-gradient kernel leaves its result: the gradients of the
// weights and the bias (in the flat gradient buffer), and its split-K
// scratch: the partial sums (weights: splits x rows x C_out, then bias:
// splits x C_out) and one arrival counter per output tile (zero between
// launches).
struct WeightGradient {
    float* grad_w;
    float* grad_b;
    float* partials;
    unsigned* tile_counters;
};

// This block's split of a split-K weight-gradient GEMM (split blockIdx.z
// of gridDim.z): rows [begin, end) of the K = batch pixels, in whole BK
// steps, and where its sums go: the gradient itself when there is one
// split, else the split's slice of the partial sums.
struct WeightSplit {
    int begin;
    int end;
    float* weights;
    float* bias;
};

template <class G>
__device__ __forceinline__ WeightSplit weight_split(const WeightGradient& out, int K) {
    constexpr int ROWS = G::KH * G::KW * G::IC;
    const int splits = gridDim.z;
    // In 64 bits: K may come close to 2^31 - 1 at the largest batch.
    const long long per_split = ((long long)K + splits - 1) / splits;
    const long long chunk = (per_split + BK - 1) / BK * BK;
    const long long begin = blockIdx.z * chunk, end = begin + chunk;
    WeightSplit split;
    split.begin = (int)(begin < K ? begin : K);
    split.end = (int)(end < K ? end : K);
    if (splits == 1) {
        split.weights = out.grad_w;
        split.bias = out.grad_b;
    } else {
        split.weights = out.partials + (size_t)blockIdx.z * ROWS * G::OC;
        split.bias = out.partials + (size_t)splits * ROWS * G::OC + (size_t)blockIdx.z * G::OC;
    }
    return split;
}

// The split-K fix-up of output tile (blockIdx.x, blockIdx.y), rows
// [m0, m0 + BM) x columns [n0, n0 + BN), once this block has written its
// partial sums: the block that finishes the tile last adds the splits'
// partial sums in split order 0, 1, ..., so the gradient does not depend on
// which block came last; for the first row tile that includes the bias
// columns. As in cooperative groups' grid barrier: the block's barrier,
// then one thread fences (its fence covers the writes the barrier ordered
// before it) and arrives; atomicInc counts 0, 1, ..., splits - 1 and wraps
// to 0 with the last arrival, so the counter is zero again for the next
// launch with no store of its own. The last block fences again before it
// reads, and reads around L1 (__ldcg), which is not coherent.
template <class G, int BM, int BN>
__device__ __forceinline__ void weight_splits_fixup(const WeightGradient& out, int m0, int n0) {
    constexpr int ROWS = G::KH * G::KW * G::IC;
    const int splits = gridDim.z;
    if (splits == 1) {
        return;
    }
    __shared__ int last_arrival;
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        unsigned* counter = out.tile_counters + blockIdx.y * gridDim.x + blockIdx.x;
        last_arrival = atomicInc(counter, (unsigned)splits - 1) == (unsigned)splits - 1;
    }
    __syncthreads();
    if (!last_arrival) {
        return;
    }
    __threadfence();
    for (int e = threadIdx.x; e < BM * BN; e += blockDim.x) {
        const int m = m0 + e / BN, co = n0 + e % BN;
        if (m < ROWS && co < G::OC) {
            const size_t at = (size_t)m * G::OC + co;
            float sum = 0.0f;
            for (int s = 0; s < splits; ++s) {
                sum += __ldcg(out.partials + (size_t)s * ROWS * G::OC + at);
            }
            out.grad_w[at] = sum;
        }
    }
    if (G::BIAS && blockIdx.x == 0) {
        const float* bias = out.partials + (size_t)splits * ROWS * G::OC;
        for (int c = threadIdx.x; c < BN; c += blockDim.x) {
            const int co = n0 + c;
            if (co < G::OC) {
                float sum = 0.0f;
                for (int s = 0; s < splits; ++s) {
                    sum += __ldcg(bias + (size_t)s * G::OC + co);
                }
                out.grad_b[co] = sum;
            }
        }
    }
}

// Gradient with respect to the weights (and the bias) as a split-K implicit
// GEMM: rows are (kh, kw, c_in), columns output channels, K runs over the
// batch's output pixels and is split across gridDim.z. Each split writes its
// partial sums where WeightSplit says; weight_splits_fixup adds them in
// split order, so the result does not depend on scheduling.
template <class G>
__device__ __forceinline__ void conv_backward_weights(const float* __restrict__ x,
                                                      const float* __restrict__ dy,
                                                      const float* __restrict__ f,
                                                      const WeightGradient& out, int n,
                                                      u64 drop_key, int training) {
    constexpr int TM = G::WTM, TN = G::WTN, BM = 16 * TM, BN = 16 * TN;
    constexpr int ROWS = G::KH * G::KW * G::IC;
    constexpr int OUT_PIXELS = G::OH * G::OW;
    __shared__ float As[BK][BM + 1];
    __shared__ float Bs[BK][BN + 1];
    const WeightSplit split = weight_split<G>(out, n * OUT_PIXELS);
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const bool drop = G::DROPOUT && !G::IN_DROPPED && training;
    const bool bias_block = G::BIAS && blockIdx.x == 0 && ty == 0;
    float acc[TM][TN] = {};
    float bias_acc[TN] = {};
    for (int k0 = split.begin; k0 < split.end; k0 += BK) {
        conv_weights_operands<G, BM, BN, false>(
            x, dy, f, m0, n0, k0, split.end, drop, drop_key,
            store_now([&](int mm, int kk, float v) { As[kk][mm] = v; },
                      [&](int kk, int nn, float v) { Bs[kk][nn] = v; }));
        __syncthreads();
        tile_step<TM, TN, BM, BN>(As, Bs, acc, tx, ty);
        if (bias_block) {
#pragma unroll
            for (int j = 0; j < TN; ++j) {
#pragma unroll
                for (int kk = 0; kk < BK; ++kk) {
                    bias_acc[j] += Bs[kk][tx + 16 * j];
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= ROWS) {
            continue;
        }
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int co = n0 + tx + 16 * j;
            if (co < G::OC) {
                split.weights[(size_t)m * G::OC + co] = acc[i][j];
            }
        }
    }
    if (bias_block) {
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int co = n0 + tx + 16 * j;
            if (co < G::OC) {
                split.bias[co] = bias_acc[j];
            }
        }
    }
    weight_splits_fixup<G, BM, BN>(out, m0, n0);
}

// The fp32 copy of a weight-gradient block's dy tile that its bias sums
// read, transposed like MmaTiles::b (dy[n][k], rows of BK + 4 floats) so
// the k-fast stores meet every bank once and each summing thread reads its
// row four values at a time (a quarter warp's 16-byte loads on distinct
// banks).
template <int N>
struct alignas(16) DyCopy {
    float dy[N][BK + 4];
};

// conv_backward_weights on tensor cores (PREC_TF32 or PREC_BF16 inputs,
// fp32 accumulation): the same split-K partial sums and fix-up. The bias
// column sums stay fp32: the blocks of the first row tile keep an fp32 copy
// of the dy tile beside the converted one (DyCopy), summed by their first
// BN threads.
template <class G, int PREC>
__device__ __forceinline__ void conv_backward_weights_mma(const float* __restrict__ x,
                                                          const float* __restrict__ dy,
                                                          const float* __restrict__ f,
                                                          const WeightGradient& out, int n,
                                                          u64 drop_key, int training) {
    constexpr int BM = 16 * G::WTM, BN = 16 * G::WTN;
    constexpr int ROWS = G::KH * G::KW * G::IC;
    constexpr int OUT_PIXELS = G::OH * G::OW;
    __shared__ MmaTiles<PREC, BM, BN> tiles;
    __shared__ DyCopy<G::BIAS ? BN : 1> dy_copy;
    const WeightSplit split = weight_split<G>(out, n * OUT_PIXELS);
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const MmaWarp warp = mma_warp<BM, BN>();
    const bool drop = G::DROPOUT && !G::IN_DROPPED && training;
    const bool bias_block = G::BIAS && blockIdx.x == 0;
    const bool bias_thread = bias_block && threadIdx.x < BN;
    float acc[BM / 64][BN / 16][4] = {};
    float bias_acc = 0.0f;
    using Stage = WeightsStaged<G, BM, BN>;
    Stage stage;
    const auto set_a = [&](int mm, int kk, float v) { tiles.set_a(mm, kk, v); };
    const auto set_b = [&](int kk, int nn, float v) {
        tiles.set_b(kk, nn, v);
        if constexpr (G::BIAS) {
            if (bias_block) {
                dy_copy.dy[nn][kk] = v;
            }
        }
    };
    pipelined_k_steps<Stage>(
        split.begin, split.end,
        [&](int k0) {
            conv_weights_operands<G, BM, BN, true>(x, dy, f, m0, n0, k0, split.end, drop,
                                                   drop_key, LoadStaged<Stage>{stage});
        },
        [&](int k0) {
            conv_weights_operands<G, BM, BN, true>(
                x, dy, f, m0, n0, k0, split.end, drop, drop_key,
                StoreStaged<Stage, decltype(set_a), decltype(set_b)>{stage, {set_a, set_b}});
        },
        [&] {
            mma_tile_step(tiles, acc, warp);
            if constexpr (G::BIAS) {
                if (bias_thread) {
#pragma unroll
                    for (int kk = 0; kk < BK; kk += 4) {
                        const float4 v = load4(&dy_copy.dy[threadIdx.x][kk]);
                        bias_acc += v.x;
                        bias_acc += v.y;
                        bias_acc += v.z;
                        bias_acc += v.w;
                    }
                }
            }
        });
    mma_for_each<BM, BN>(acc, warp, [&](int row, int col, float v) {
        if (m0 + row < ROWS && n0 + col < G::OC) {
            split.weights[(size_t)(m0 + row) * G::OC + n0 + col] = v;
        }
    });
    if (bias_thread && n0 + (int)threadIdx.x < G::OC) {
        split.bias[n0 + threadIdx.x] = bias_acc;
    }
    weight_splits_fixup<G, BM, BN>(out, m0, n0);
}

// The clipped span of pooling window `o` along one axis (Caffe's rule, as
// runtime::cpu::pool): input positions [begin, end) and the divisor of the
// average pool (window elements inside the padded input).
struct PoolSpan {
    int begin;
    int end;
    int divisor;
};

__device__ __forceinline__ PoolSpan pool_span(int o, int k, int stride, int pad_before,
                                              int pad_after, int size) {
    const int start = o * stride - pad_before;
    const int end = min(start + k, size + pad_after);
    PoolSpan span;
    span.divisor = max(end - start, 0);
    span.begin = min(max(start, 0), size);
    span.end = min(max(end, 0), size);
    return span;
}

// The outputs whose windows contain input position `i` along one axis.
__device__ __forceinline__ void covering(int i, int k, int stride, int pad_before, int outputs,
                                         int* first, int* last) {
    const int low = i + pad_before - k + 1;
    *first = low <= 0 ? 0 : (low + stride - 1) / stride;
    *last = min(outputs - 1, (i + pad_before) / stride);
}

// Max pooling; one thread per output value. The switch is the index within
// the image of the value chosen (the first maximum in window order).
template <class G>
__device__ __forceinline__ void max_pool_forward(const float* __restrict__ x, float* __restrict__ y,
                                                 int* __restrict__ switches, int n) {
    constexpr int IN_LEN = G::IH * G::IW * G::C, OUT_LEN = G::OH * G::OW * G::C;
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)n * OUT_LEN) {
        return;
    }
    const int image = e / OUT_LEN, r = e % OUT_LEN;
    const int c = r % G::C, pixel = r / G::C;
    const PoolSpan rows = pool_span(pixel / G::OW, G::KH, G::SH, G::PT, G::PB, G::IH);
    const PoolSpan cols = pool_span(pixel % G::OW, G::KW, G::SW, G::PL, G::PR, G::IW);
    const float* image_x = x + (size_t)image * IN_LEN;
    float best = 0.0f;
    int arg = NO_SWITCH;
    for (int ih = rows.begin; ih < rows.end; ++ih) {
        for (int iw = cols.begin; iw < cols.end; ++iw) {
            const int j = (ih * G::IW + iw) * G::C + c;
            const float v = image_x[j];
            if (arg == NO_SWITCH || v > best) {
                best = v;
                arg = j;
            }
        }
    }
    y[e] = arg == NO_SWITCH ? 0.0f : best;
    switches[e] = arg;
}

// The sum, over the pooling outputs whose windows cover element `r` of an
// image's input (channels-last), of `term(o, oh, ow)`: `o` is the output's
// index (`base` plus its offset in the image), in output order.
template <class G, class Term>
__device__ __forceinline__ float sum_covering(int r, size_t base, Term term) {
    const int c = r % G::C, pixel = r / G::C;
    int oh_first, oh_last, ow_first, ow_last;
    covering(pixel / G::IW, G::KH, G::SH, G::PT, G::OH, &oh_first, &oh_last);
    covering(pixel % G::IW, G::KW, G::SW, G::PL, G::OW, &ow_first, &ow_last);
    float sum = 0.0f;
    for (int oh = oh_first; oh <= oh_last; ++oh) {
        for (int ow = ow_first; ow <= ow_last; ++ow) {
            sum += term(base + (oh * G::OW + ow) * G::C + c, oh, ow);
        }
    }
    return sum;
}

// Backward max pooling as a gather: each input value sums the signals of
// the outputs whose switch points at it, in output order (no atomics).
template <class G>
__device__ __forceinline__ void max_pool_backward(const float* __restrict__ dy,
                                                  const int* __restrict__ switches,
                                                  float* __restrict__ dx, int n) {
    constexpr int IN_LEN = G::IH * G::IW * G::C, OUT_LEN = G::OH * G::OW * G::C;
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)n * IN_LEN) {
        return;
    }
    const int image = e / IN_LEN, r = e % IN_LEN;
    dx[e] = sum_covering<G>(r, (size_t)image * OUT_LEN, [&](size_t o, int, int) {
        return switches[o] == r ? dy[o] : 0.0f;
    });
}

// Average pooling (Caffe's divisor); one thread per output value.
template <class G>
__device__ __forceinline__ void avg_pool_forward(const float* __restrict__ x, float* __restrict__ y,
                                                 int n) {
    constexpr int IN_LEN = G::IH * G::IW * G::C, OUT_LEN = G::OH * G::OW * G::C;
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)n * OUT_LEN) {
        return;
    }
    const int image = e / OUT_LEN, r = e % OUT_LEN;
    const int c = r % G::C, pixel = r / G::C;
    const PoolSpan rows = pool_span(pixel / G::OW, G::KH, G::SH, G::PT, G::PB, G::IH);
    const PoolSpan cols = pool_span(pixel % G::OW, G::KW, G::SW, G::PL, G::PR, G::IW);
    const float* image_x = x + (size_t)image * IN_LEN;
    float sum = 0.0f;
    for (int ih = rows.begin; ih < rows.end; ++ih) {
        for (int iw = cols.begin; iw < cols.end; ++iw) {
            sum += image_x[(ih * G::IW + iw) * G::C + c];
        }
    }
    const int divisor = rows.divisor * cols.divisor;
    y[e] = divisor == 0 ? 0.0f : sum * (1.0f / (float)divisor);
}

// Backward average pooling as a gather over the covering windows.
template <class G>
__device__ __forceinline__ void avg_pool_backward(const float* __restrict__ dy,
                                                  float* __restrict__ dx, int n) {
    constexpr int IN_LEN = G::IH * G::IW * G::C, OUT_LEN = G::OH * G::OW * G::C;
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)n * IN_LEN) {
        return;
    }
    const int image = e / IN_LEN, r = e % IN_LEN;
    dx[e] = sum_covering<G>(r, (size_t)image * OUT_LEN, [&](size_t o, int oh, int ow) {
        const int divisor = pool_span(oh, G::KH, G::SH, G::PT, G::PB, G::IH).divisor *
                            pool_span(ow, G::KW, G::SW, G::PL, G::PR, G::IW).divisor;
        return divisor == 0 ? 0.0f : dy[o] * (1.0f / (float)divisor);
    });
}

// Global average pooling; one thread per (image, channel).
template <class G>
__device__ __forceinline__ void global_avg_pool_forward(const float* __restrict__ x,
                                                        float* __restrict__ y, int n) {
    constexpr int PIXELS = G::H * G::W;
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)n * G::C) {
        return;
    }
    const int image = e / G::C, c = e % G::C;
    const float* image_x = x + (size_t)image * PIXELS * G::C;
    float sum = 0.0f;
    for (int p = 0; p < PIXELS; ++p) {
        sum += image_x[p * G::C + c];
    }
    y[e] = sum * (1.0f / (float)PIXELS);
}

template <class G>
__device__ __forceinline__ void global_avg_pool_backward(const float* __restrict__ dy,
                                                         float* __restrict__ dx, int n) {
    constexpr int PIXELS = G::H * G::W;
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)n * PIXELS * G::C) {
        return;
    }
    const int image = e / (PIXELS * G::C), c = e % G::C;
    dx[e] = dy[(size_t)image * G::C + c] * (1.0f / (float)PIXELS);
}

// A signal placed at the output of a conv group whose backward kernels
// take their gradient masked (DY_MASKED: a visualisation's signal, which no
// kernel above wrote): the activation's rule applied in place, one pixel's
// channels per thread (the batch's pixels index as int, like the conv
// kernels' rows), as the conv group above would have in its epilogue.
template <class G>
__device__ __forceinline__ void mask_signal(float* __restrict__ g, const float* __restrict__ f,
                                            int n, int rule) {
    const int pixel = blockIdx.x * blockDim.x + threadIdx.x;
    if (pixel >= n * G::OH * G::OW) {
        return;
    }
    const size_t base = (size_t)pixel * G::OC;
    for (int c = 0; c < G::OC; ++c) {
        g[base + c] = relu_rule<G::ACT>(g[base + c], f[base + c], G::SLOPE, rule);
    }
}

// A dropout no conv absorbed: forward and backward of one value per thread.
template <class G>
__device__ __forceinline__ void dropout_forward(const float* __restrict__ x, float* __restrict__ y,
                                                int n, u64 drop_key, int training) {
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)n * G::LEN) {
        return;
    }
    const float v = x[e];
    y[e] = training ? dropout_value<G>(v, drop_key, e / G::LEN, e % G::LEN) : v;
}

template <class G>
__device__ __forceinline__ void dropout_backward(const float* __restrict__ dy,
                                                 float* __restrict__ dx, int n, u64 drop_key,
                                                 int training) {
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (size_t)n * G::LEN) {
        return;
    }
    const float g = dy[e];
    dx[e] = training ? dropout_value<G>(g, drop_key, e / G::LEN, e % G::LEN) : g;
}

// The head: [global average pool +] softmax [+ cross-entropy and its
// gradient]. One block per image; the averages and probabilities stay in
// shared memory (2 x C floats, dynamic). The loss is a log-sum-exp in
// double, like the CPU's; the gradient at the head's input is
// (p - onehot(label)) / n / (H * W) at every pixel. Training adds each
// image's loss and top-1 hit to its slot of `loss` and `correct`, so the
// statistics of many steps pile up on the device and the host reads them
// when it chooses (no read-back, hence no synchronisation, per step).
template <class G, bool TRAIN>
__device__ __forceinline__ void head(const float* __restrict__ x, const int* __restrict__ labels,
                                     float* __restrict__ logits, float* __restrict__ probs,
                                     double* __restrict__ loss, int* __restrict__ correct,
                                     float* __restrict__ dx, int n) {
    constexpr int PIXELS = G::H * G::W;
    extern __shared__ float head_shared[];
    float* z = head_shared;
    float* p = head_shared + G::C;
    const int image = blockIdx.x;
    if (image >= n) {
        return;
    }
    const float* image_x = x + (size_t)image * PIXELS * G::C;
    for (int c = threadIdx.x; c < G::C; c += blockDim.x) {
        float sum = 0.0f;
        for (int q = 0; q < PIXELS; ++q) {
            sum += image_x[q * G::C + c];
        }
        z[c] = sum * (1.0f / (float)PIXELS);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float max = z[0];
        int top = 0;
        for (int c = 1; c < G::C; ++c) {
            if (z[c] > z[top]) {
                top = c;
            }
            max = fmaxf(max, z[c]);
        }
        float sum = 0.0f;
        for (int c = 0; c < G::C; ++c) {
            p[c] = expf(z[c] - max);
            sum += p[c];
        }
        const float inv = 1.0f / sum;
        for (int c = 0; c < G::C; ++c) {
            p[c] *= inv;
        }
        if constexpr (TRAIN) {
            const int label = labels[image];
            double exp_sum = 0.0;
            for (int c = 0; c < G::C; ++c) {
                exp_sum += exp((double)z[c] - (double)max);
            }
            loss[image] += (double)max + log(exp_sum) - (double)z[label];
            correct[image] += top == label ? 1 : 0;
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < G::C; c += blockDim.x) {
        logits[(size_t)image * G::C + c] = z[c];
        probs[(size_t)image * G::C + c] = p[c];
    }
    if constexpr (TRAIN) {
        const int label = labels[image];
        const float inv_n = 1.0f / (float)n;
        float* image_dx = dx + (size_t)image * PIXELS * G::C;
        for (int e = threadIdx.x; e < PIXELS * G::C; e += blockDim.x) {
            const int c = e % G::C;
            const float g = (p[c] - (c == label ? 1.0f : 0.0f)) * inv_n;
            image_dx[e] = g * (1.0f / (float)PIXELS);
        }
    }
}

// Backward of the softmax for an arbitrary signal (visualisation):
// dx = p * (dy - <dy, p>); one thread per image.
template <class G>
__device__ __forceinline__ void softmax_backward(const float* __restrict__ probs,
                                                 const float* __restrict__ dy,
                                                 float* __restrict__ dx, int n) {
    const int image = blockIdx.x * blockDim.x + threadIdx.x;
    if (image >= n) {
        return;
    }
    const size_t base = (size_t)image * G::C;
    float dot = 0.0f;
    for (int c = 0; c < G::C; ++c) {
        dot += probs[base + c] * dy[base + c];
    }
    for (int c = 0; c < G::C; ++c) {
        dx[base + c] = probs[base + c] * (dy[base + c] - dot);
    }
}

// One SGD step with momentum (and Nesterov) over the flat parameter buffer:
// weights first (they get weight decay), biases after them. The arithmetic
// is rounded exactly as the CPU backend's (no fused multiply-add), so the
// same gradients give the same parameters.
template <int N_PARAMS, int N_WEIGHTS>
__device__ __forceinline__ void sgd_update(float* __restrict__ w, const float* __restrict__ g,
                                           float* __restrict__ v, float lr, float momentum,
                                           int nesterov, float weight_decay) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N_PARAMS) {
        return;
    }
    const float decay = i < N_WEIGHTS ? weight_decay : 0.0f;
    const float wi = w[i];
    const float d = __fadd_rn(g[i], __fmul_rn(decay, wi));
    const float vi = __fadd_rn(__fmul_rn(momentum, v[i]), d);
    v[i] = vi;
    const float step = nesterov ? __fmul_rn(lr, __fadd_rn(d, __fmul_rn(momentum, vi)))
                                : __fmul_rn(lr, vi);
    w[i] = __fsub_rn(wi, step);
}

}  // namespace allcnnc
