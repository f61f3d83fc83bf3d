/* Matrix-vector kernels for the CPU decode step (x86-64 with AVX-512; int8 and int4 on AVX2 too), built by cpu_kernels.py.

   A decode step multiplies a few activation rows (2 with guidance) by every weight matrix, so it
   is bound by how fast the weights stream from memory. torch's small-batch kernels walk several
   rows of W at once, one memory stream each, and reach about two thirds of this machine's
   bandwidth. Here W is packed once into a single sequential stream:

       [K / chunk][N / ROWS][chunk / VEC][ROWS][VEC]    VEC: the values one vector instruction takes

   Each block of ROWS output rows is read front to back with a prefetch running ahead; K is cut
   into chunks so that the activations' part of a chunk stays in the L1 cache while every block
   streams past it. The activation rows (at most MAX_M) are applied M_STEP at a time to a block
   while it is in cache.

   ts_gemv_int8: int8 W and one float32 scale per output row. Weight-only: the activations and the
                 sums stay float32 (AVX-512); on AVX2 CPUs the activations are rounded to int16 first
                 (ts_int8_rounds_x: 1; one scale per row, see the AVX2 part below).
   ts_gemv_bf16: bfloat16 W; AVX512-BF16 dot products summed in float32.
   ts_gemv_int4: int4 W in groups of G inputs, each with a bfloat16 scale and minimum; the same AVX2
                 code in both builds (the activations rounded to int8 rows; see the int4 part).
   x and y are float32 or bfloat16 (the *_bf16 flags). Each returns 0, or 1 for shapes it does not
   take (the caller then uses torch).

   ts_attend_bf16: one query position against a bfloat16 key/value cache (the decode step's
   attention), float32 softmax; half the bytes of a float32 cache, which torch's CPU attention
   needs to be fast. AVX512-BF16 and AVX2 builds.

   ts_decode_step: the whole decoder for one position (cpu_step.py): every layer's norms, products,
   attention, GELU and residual adds in one OpenMP region, then the heads. AVX512-BF16 builds, and
   AVX2 builds for int8 and int4 weights only: one driver (at the end), each build's own norms, GELU and
   products.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 4           /* output rows per block */
#define INT8_VEC 16      /* int8 values widened to one float32 vector */
#define BF16_VEC 32      /* bfloat16 values per dot-product instruction */
#define PREFETCH 2048    /* bytes ahead of the read position (int4: INT4_PREFETCH) */
#define MAX_M 16         /* activation rows; torch's GEMM is better past this */
#define M_STEP 4         /* activation rows per pass over a block (M_STEP * ROWS accumulators) */
#define MAX_HEAD_DIM 128 /* attention */

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {  /* round to nearest even, as torch does; NaN stays NaN */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* ---- The whole decode step: every layer in one OpenMP region -------------------------------- */

/* A torch decode step is some 20 operations per layer, each a call from Python with its own thread
   start; for musicgen-small that overhead is a fifth of the step with AVX512-BF16, half with AVX2's
   int8. Here the threads start once per step and meet at a barrier after each product. Activations
   and the residual stream are float32; the key/value caches bfloat16. */

typedef struct {          /* one linear layer (no bias), packed by cpu_kernels.pack (int4: pack_int4) */
    const void *w;
    const float *scale;   /* int8 weights: one scale per output row; NULL: bfloat16 or int4 weights */
    int N, K, chunk;
    int group;            /* int4 weights: inputs per group; 0 otherwise */
} ts_linear;

typedef struct {
    const float *attn_norm[2];          /* LayerNorm weight and bias, float32 [dim] */
    ts_linear qkv, attn_out;
    uint16_t *k_cache, *v_cache;        /* [M, heads, max_len, head_dim] */
    const float *cross_norm[2];         /* NULLs: no cross-attention (melody models) */
    ts_linear cross_q, cross_out;
    const uint16_t *cross_k, *cross_v;  /* [M, heads, text_len, head_dim] */
    const float *mlp_norm[2];
    ts_linear fc1, fc2;
} ts_layer;

typedef struct {
    int n_layers, dim, heads, head_dim, ffn_dim, max_len, text_len;
    float eps;
    const ts_layer *layers;
    const float *norm[2];
    ts_linear lm_heads;
    const uint16_t *cross_bias;         /* [M, text_len] additive, or NULL */
} ts_model;

typedef struct {                        /* where a product's outputs go */
    enum { STORE, ADD, GELU, QKV } kind;
    float *y;                           /* [M, N]; QKV: the queries, [M, dim] */
    uint16_t *k_cache, *v_cache;        /* QKV: keys and values go to position pos */
    int pos;
} ts_sink;

/* A QKV sink's output column n of row m: [q | k | v] columns, each [heads, head_dim]; the query to y,
   the key and value to the caches at the sink's position. */
static inline void store_qkv(const ts_model *model, const ts_sink *to, int m, int n, float value) {
    int D = model->dim, hd = model->head_dim;
    int part = n / D, col = n % D, h = col / hd, d = col % hd;
    size_t at = (((size_t)m * model->heads + h) * model->max_len + to->pos) * hd + d;
    if (part == 0) to->y[(size_t)m * D + col] = value;
    else (part == 1 ? to->k_cache : to->v_cache)[at] = f32_to_bf16(value);
}

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#include <omp.h>

/* sums[m * N + j] += x[m] . W[j] over one block of one chunk: x rows `x_stride` apart, `length` values. */
typedef void (*block_fn)(const void *x, long x_stride, int length, const void *block, float *sums, int N);

/* always_inline: as a function of its own, gcc finds it has no side effects and deletes its calls (it did,
   until 2026-12-04). Used where measured to help: AVX2's int8 (one AVX2 core 9.1 -> 12.5 GB/s) and int4 (+10%
   on Zen 4); AVX-512's int8 and bfloat16 products run without (on Zen 4 it cost bfloat16 10%, int8 3%). */
static inline __attribute__((always_inline)) void prefetch(const char *p, int ahead, int lines) {
    for (int i = 0; i < lines; i++) _mm_prefetch(p + ahead + 64 * i, _MM_HINT_T0);
}

/* One thread's share of sums = x W^T: output blocks [first, last), all of K. x: activations prepared
   by the caller (float32 for int8 W, bfloat16 for bfloat16 W), [M, K]; w: packed, w_size bytes per
   element; sums [M, N], this thread's columns only. */
static void gemv_blocks(const void *x, size_t x_size, int M, int K, int chunk, const void *w, size_t w_size, int N,
                        int first, int last, float *sums, const block_fn rows_fn[M_STEP]) {
    for (int m = 0; m < M; m++) memset(sums + (size_t)m * N + first * ROWS, 0, (size_t)(last - first) * ROWS * sizeof(float));
    for (int c = 0; c < K; c += chunk) {
        const char *chunk_w = (const char *)w + (size_t)c * N * w_size;
        for (int b = first; b < last; b++) {
            const char *block = chunk_w + (size_t)b * ROWS * chunk * w_size;
            for (int m0 = 0; m0 < M; m0 += M_STEP) {
                const char *xm = (const char *)x + ((size_t)m0 * K + c) * x_size;
                int m_rows = M - m0 < M_STEP ? M - m0 : M_STEP;
                rows_fn[m_rows - 1](xm, K, chunk, block, sums + (size_t)m0 * N + b * ROWS, N);
            }
        }
    }
}

static int gemv_shape_ok(int M, int K, int chunk, int vec, int N) {
    return M >= 1 && M <= MAX_M && N % ROWS == 0 && chunk >= vec && chunk % vec == 0 && K % chunk == 0;
}

static void thread_blocks(int N, int *first, int *last) {  /* this thread's output blocks */
    int blocks = N / ROWS, t = omp_get_thread_num(), nt = omp_get_num_threads();
    *first = (int)((long)blocks * t / nt);
    *last = (int)((long)blocks * (t + 1) / nt);
}

/* y = sums * scale[n] * x_scale[m] (either scale may be NULL: 1) over one thread's output blocks
   [first, last): its own columns, so no barrier is needed. */
static void store_rows(const float *sums, const float *scale, const float *x_scale, int M, int N, int first, int last,
                       void *y, int y_bf16) {
    for (int m = 0; m < M; m++)
        for (int n = first * ROWS; n < last * ROWS; n++) {
            float v = sums[(size_t)m * N + n] * (scale ? scale[n] : 1.0f) * (x_scale ? x_scale[m] : 1.0f);
            if (y_bf16) ((uint16_t *)y)[(size_t)m * N + n] = f32_to_bf16(v);
            else ((float *)y)[(size_t)m * N + n] = v;
        }
}

/* y = (x W^T) * scale[n] * x_scale[m]; either scale may be NULL (1). */
static int gemv(const void *x, size_t x_size, int M, int K, int chunk, const void *w, size_t w_size, int vec,
                const float *scale, const float *x_scale, int N, void *y, int y_bf16, int threads,
                const block_fn rows_fn[M_STEP]) {
    if (!gemv_shape_ok(M, K, chunk, vec, N)) return 1;
    float *sums = malloc((size_t)M * N * sizeof(float));
    if (!sums) return 1;
#pragma omp parallel num_threads(threads)
    {
        int first, last;
        thread_blocks(N, &first, &last);
        gemv_blocks(x, x_size, M, K, chunk, w, w_size, N, first, last, sums, rows_fn);
        store_rows(sums, scale, x_scale, M, N, first, last, y, y_bf16);
    }
    free(sums);
    return 0;
}

#define X_STEP 2  /* activation rows per pass over a block: 2 x ROWS accumulators of 16 ymm registers */

static inline __m256 bf16x8_to_f32(const uint16_t *p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

/* acc + the int16 products of a and b summed in pairs (vpmaddwd then an add): one instruction where the
   CPU has VNNI (AVX512-VNNI, or AVX-VNNI on Intel's AVX2-only cores since Alder Lake), the same sums. */
static inline __m256i dot_add(__m256i acc, __m256i a, __m256i b) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpwssd_epi32(acc, a, b);
#elif defined(__AVXVNNI__)
    return _mm256_dpwssd_avx_epi32(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

/* acc + the products of the unsigned bytes of a (nibbles here: 0..15) and the signed bytes of b, summed in
   fours: one VNNI instruction, or on plain AVX2 vpmaddubsw (pairs of at most 2 * 15 * 128: no saturation)
   and vpmaddwd by ones. */
static inline __m256i dot_add_u8(__m256i acc, __m256i a, __m256i b) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, a, b);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
#endif
}

static inline float sum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* x [M, K] float32 (or bfloat16) -> int16 rows (bits 16; int8 rows: bits 8), each with the scale that maps its
   largest |value| to 32767 (127). */
static int round_rows(const void *x, int x_bf16, int M, int K, int bits, void *xq, float *x_scale) {
    float levels = bits == 8 ? 127.0f : 32767.0f;
    for (int m = 0; m < M; m++) {
        const float *xf = (const float *)x + (size_t)m * K;
        const uint16_t *xb = (const uint16_t *)x + (size_t)m * K;
        float top = 0.0f;
        for (int k = 0; k < K; k++) {
            float v = x_bf16 ? bf16_to_f32(xb[k]) : xf[k];
            float a = v < 0 ? -v : v;
            if (!(a <= top)) top = a;  /* NaN makes top NaN */
        }
        if (!(top <= 3.0e38f)) return 1;  /* inf or NaN: torch's product carries them */
        float scale = top > 1e-30f ? top / levels : 1.0f, inv = 1.0f / scale;  /* 1/scale stays finite */
        for (int k = 0; k < K; k++) {
            long v = __builtin_lrintf((x_bf16 ? bf16_to_f32(xb[k]) : xf[k]) * inv);
            if (bits == 8) ((int8_t *)xq)[(size_t)m * K + k] = (int8_t)v;
            else ((int16_t *)xq)[(size_t)m * K + k] = (int16_t)v;
        }
        x_scale[m] = scale;
    }
    return 0;
}

/* int4 weights (quantize="int4"): a quarter of bfloat16's bytes a step, for the CPUs where int8 is still
   bound by memory. Per chunk, each block of ROWS output rows is packed (cpu_kernels.pack_int4) as
       [chunk / 32][ROWS][16 bytes]   byte i: input k + i in the low nibble, k + 16 + i in the high
       [chunk / G][ROWS][2]           per group of G inputs: bfloat16 scale and minimum
   and a weight is minimum + scale * nibble (0..15). The activations are rounded to int8 rows (one scale
   per row; they add a fortieth to the int4 weights' drift: random musicgen-small weights drifted from float32
   by a KL of 0.0305 nats with float activations, 0.0313 with int8 rows), so that one u8 x s8 dot product
   (VNNI's vpdpbusd; vpmaddubsw + vpmaddwd on plain AVX2) multiplies 32 nibbles. sum w x = scale * sum nibble x
   + minimum * sum x over each group: the sum of each group of a row (xsum) carries the minimums, and the
   nibbles need no offset. */
#define INT4_STEP 32      /* inputs per 16 bytes of one row */
#define MAX_GROUPS 256    /* groups of K (the whole step keeps its group sums on the stack) */
#define INT4_PREFETCH 4096 /* on Zen 4, 8% faster from memory than PREFETCH's 2048 */

static size_t int4_block_bytes(int chunk, int G) { return (size_t)ROWS * (chunk / 2 + chunk / G * 4); }

static int int4_shape_ok(int M, int K, int chunk, int G, int N) {
    return M >= 1 && M <= MAX_M && N % ROWS == 0 && G >= INT4_STEP && G % INT4_STEP == 0 && chunk % G == 0
           && K % chunk == 0 && K / G <= MAX_GROUPS;
}

static inline int int4_fits(const ts_linear *lin) {  /* an int4 linear of the whole step in a shape int4_blocks takes */
    return int4_shape_ok(1, lin->K, lin->chunk, lin->group, lin->N);
}

/* The whole step's activations x [M, K] float32 as int16 (int8: bits 8) rows in xq, their scales in x_scale:
   NaN for a row of inf or NaN (its outputs NaN, as torch's product would carry them). */
static void round_step_rows(const float *x, int M, int K, int bits, void *xq, float *x_scale) {
    if (round_rows(x, 0, M, K, bits, xq, x_scale))
        for (int m = 0; m < M; m++) x_scale[m] = __builtin_nanf("");
}

static void group_sums(const int8_t *xq, int M, int K, int G, float *xsum) {  /* xsum [M, K / G] */
    for (int m = 0; m < M; m++)
        for (int g = 0; g < K / G; g++) {
            int32_t total = 0;
            for (int k = g * G; k < (g + 1) * G; k++) total += xq[(size_t)m * K + k];
            xsum[(size_t)m * (K / G) + g] = (float)total;
        }
}

/* sums[m * N + j] += x[m] . W[j] over one block of one chunk for `rows` (a literal: 1 or 2) rows of x,
   `x_stride` apart, and their group sums, `groups` apart. */
static inline __attribute__((always_inline)) void int4_block(int rows, const int8_t *x, long x_stride,
                                                             const float *xsum, long groups, int length, int G,
                                                             const uint8_t *block, int lead, float *sums, int N) {
    const uint16_t *scales = (const uint16_t *)(block + (size_t)ROWS * length / 2);  /* [length / G][ROWS][2] */
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256 acc[X_STEP][ROWS];
    __m128 offset[X_STEP];  /* the minimums' part, one lane per row of the block */
    for (int m = 0; m < X_STEP; m++) {
        offset[m] = _mm_setzero_ps();
        for (int j = 0; j < ROWS; j++) acc[m][j] = _mm256_setzero_ps();
    }
    for (int g = 0; g < length / G; g++) {
        __m256i group[X_STEP][ROWS];  /* int32 sums of this group: at most G/8 * 15 * 128 a lane */
        for (int m = 0; m < X_STEP; m++)
            for (int j = 0; j < ROWS; j++) group[m][j] = _mm256_setzero_si256();
        for (int k = g * G; k < (g + 1) * G; k += INT4_STEP) {
            const uint8_t *step = block + (size_t)k / 2 * ROWS;  /* ROWS x 16 bytes: one cache line */
            if (lead) prefetch((const char *)step, INT4_PREFETCH, 1);
            __m256i xr[X_STEP];  /* inputs k .. k + 31 */
            for (int m = 0; m < rows; m++) xr[m] = _mm256_loadu_si256((const __m256i *)(x + m * x_stride + k));
            for (int j = 0; j < ROWS; j += 2) {  /* rows j and j + 1: 16 bytes each */
                __m256i bytes = _mm256_loadu_si256((const __m256i *)(step + 16 * j));
                __m256i lows = _mm256_and_si256(bytes, low), highs = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
                __m256i w0 = _mm256_permute2x128_si256(lows, highs, 0x20);  /* row j, inputs k .. k + 31 */
                __m256i w1 = _mm256_permute2x128_si256(lows, highs, 0x31);  /* row j + 1 */
                for (int m = 0; m < rows; m++) {
                    group[m][j] = dot_add_u8(group[m][j], w0, xr[m]);
                    group[m][j + 1] = dot_add_u8(group[m][j + 1], w1, xr[m]);
                }
            }
        }
        __m256 pairs = bf16x8_to_f32(scales + (size_t)g * ROWS * 2);  /* scale, minimum of each row */
        for (int j = 0; j < ROWS; j++) {
            __m256 scale = _mm256_permutevar8x32_ps(pairs, _mm256_set1_epi32(2 * j));
            for (int m = 0; m < rows; m++) acc[m][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(group[m][j]), scale, acc[m][j]);
        }
        __m128 minimums = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(pairs, _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7)));
        for (int m = 0; m < rows; m++) offset[m] = _mm_fmadd_ps(minimums, _mm_set1_ps(xsum[m * groups + g]), offset[m]);
    }
    for (int m = 0; m < rows; m++) {
        float part[ROWS];
        _mm_storeu_ps(part, offset[m]);
        for (int j = 0; j < ROWS; j++) sums[(size_t)m * N + j] += sum8(acc[m][j]) + part[j];
    }
}

/* One thread's share of sums = x W^T for int4 W, as gemv_blocks: output blocks [first, last), all of K. */
static void int4_blocks(const int8_t *x, const float *xsum, int M, int K, int chunk, int G, const uint8_t *w, int N,
                        int first, int last, float *sums) {
    size_t block_bytes = int4_block_bytes(chunk, G);
    int groups = K / G;
    for (int m = 0; m < M; m++) memset(sums + (size_t)m * N + first * ROWS, 0, (size_t)(last - first) * ROWS * sizeof(float));
    for (int c = 0; c < K; c += chunk) {
        const uint8_t *chunk_w = w + (size_t)(c / chunk) * (N / ROWS) * block_bytes;
        for (int b = first; b < last; b++) {
            const uint8_t *block = chunk_w + (size_t)b * block_bytes;
            for (int m0 = 0; m0 < M; m0 += X_STEP) {
                const int8_t *xm = x + (size_t)m0 * K + c;
                const float *sm = xsum + (size_t)m0 * groups + c / G;
                float *out = sums + (size_t)m0 * N + b * ROWS;
                if (M - m0 >= 2) int4_block(2, xm, K, sm, groups, chunk, G, block, m0 == 0, out, N);
                else int4_block(1, xm, K, sm, groups, chunk, G, block, m0 == 0, out, N);
            }
        }
    }
}

/* The whole step's int4 product, this thread's output blocks [first, last): x [M, K] float32 rounded to int8
   rows in xq (this thread's scratch), their scales in x_scale. */
static inline void int4_step_sums(const ts_linear *lin, const float *x, int M, int8_t *xq, float *x_scale, int first,
                                  int last, float *sums) {
    float xsum[MAX_M * MAX_GROUPS];
    round_step_rows(x, M, lin->K, 8, xq, x_scale);
    group_sums(xq, M, lin->K, lin->group, xsum);
    int4_blocks(xq, xsum, M, lin->K, lin->chunk, lin->group, lin->w, lin->N, first, last, sums);
}

int ts_gemv_int4(const void *x, int x_bf16, int M, int K, int chunk, int G, const uint8_t *w, int N, void *y,
                 int y_bf16, int threads) {
    if (!int4_shape_ok(M, K, chunk, G, N)) return 1;
    int8_t *xq = aligned_alloc(64, ((size_t)M * K + 63) / 64 * 64);
    float *xsum = malloc((size_t)M * (K / G) * sizeof(float)), *sums = malloc((size_t)M * N * sizeof(float));
    float x_scale[MAX_M];
    int failed = !xq || !xsum || !sums || round_rows(x, x_bf16, M, K, 8, xq, x_scale);
    if (!failed) {
        group_sums(xq, M, K, G, xsum);
#pragma omp parallel num_threads(threads)
        {
            int first, last;
            thread_blocks(N, &first, &last);
            int4_blocks(xq, xsum, M, K, chunk, G, w, N, first, last, sums);
            store_rows(sums, NULL, x_scale, M, N, first, last, y, y_bf16);
        }
    }
    free(xq);
    free(xsum);
    free(sums);
    return failed;
}
#endif

#ifdef __AVX512F__
int ts_has_int8(void) { return 1; }
int ts_int8_rounds_x(void) { return 0; }

static inline __m512 bf16x16_to_f32(const uint16_t *p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

/* The accumulators are locals (a pointer to them would keep them in memory), reduced at the end. */
static inline void add_sums(int m_rows, __m512 acc[M_STEP][ROWS], float *sums, int N) {
    for (int m = 0; m < m_rows; m++)
        for (int j = 0; j < ROWS; j++) sums[(size_t)m * N + j] += _mm512_reduce_add_ps(acc[m][j]);
}

/* m_rows is a literal at each use below, so the loops over it unroll. */
static inline __attribute__((always_inline)) void int8_block(int m_rows, const void *xv, long x_stride, int length,
                                                             const void *blockv, float *sums, int N) {
    const float *x = xv;
    const int8_t *block = blockv;
    __m512 acc[M_STEP][ROWS];
    for (int m = 0; m < M_STEP; m++)
        for (int j = 0; j < ROWS; j++) acc[m][j] = _mm512_setzero_ps();
    for (int k = 0; k < length; k += INT8_VEC) {
        const int8_t *step = block + (size_t)k * ROWS;  /* ROWS x 16 int8: one cache line (no prefetch: below) */
        __m512 xr[M_STEP];
        for (int m = 0; m < m_rows; m++) xr[m] = _mm512_loadu_ps(x + m * x_stride + k);
        for (int j = 0; j < ROWS; j++) {
            __m128i w8 = _mm_loadu_si128((const __m128i *)(step + j * INT8_VEC));
            __m512 w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(w8));
            for (int m = 0; m < m_rows; m++) acc[m][j] = _mm512_fmadd_ps(xr[m], w, acc[m][j]);
        }
    }
    add_sums(m_rows, acc, sums, N);
}
#define ROWS_FN(name, block_fn_, n) \
    static void name(const void *x, long s, int len, const void *b, float *sums, int N) { block_fn_(n, x, s, len, b, sums, N); }
ROWS_FN(int8_1, int8_block, 1)
ROWS_FN(int8_2, int8_block, 2)
ROWS_FN(int8_3, int8_block, 3)
ROWS_FN(int8_4, int8_block, 4)
static const block_fn int8_rows[M_STEP] = {int8_1, int8_2, int8_3, int8_4};

int ts_gemv_int8(const void *x, int x_bf16, int M, int K, int chunk, const int8_t *w, const float *scale, int N,
                 void *y, int y_bf16, int threads) {
    if (M < 1 || M > MAX_M || K % INT8_VEC) return 1;  /* before the conversion below reads x */
    float *xf = (float *)x;
    if (x_bf16) {
        xf = aligned_alloc(64, (size_t)M * K * sizeof(float));  /* K * 4 is a multiple of 64 */
        if (!xf) return 1;
        for (size_t i = 0; i < (size_t)M * K; i += 16)  /* K is a multiple of 16 */
            _mm512_storeu_ps(xf + i, bf16x16_to_f32((const uint16_t *)x + i));
    }
    int failed = gemv(xf, sizeof(float), M, K, chunk, w, 1, INT8_VEC, scale, NULL, N, y, y_bf16, threads, int8_rows);
    if (x_bf16) free(xf);
    return failed;
}

#ifdef __AVX512BF16__
int ts_has_bf16(void) { return 1; }

static inline __attribute__((always_inline)) void bf16_block(int m_rows, const void *xv, long x_stride, int length,
                                                             const void *blockv, float *sums, int N) {
    const uint16_t *x = xv, *block = blockv;
    __m512 acc[M_STEP][ROWS];
    for (int m = 0; m < M_STEP; m++)
        for (int j = 0; j < ROWS; j++) acc[m][j] = _mm512_setzero_ps();
    for (int k = 0; k < length; k += BF16_VEC) {
        const uint16_t *step = block + (size_t)k * ROWS;  /* ROWS x 32 bfloat16: ROWS cache lines */
        __m512bh xr[M_STEP];
        for (int m = 0; m < m_rows; m++) xr[m] = (__m512bh)_mm512_loadu_si512(x + m * x_stride + k);
        for (int j = 0; j < ROWS; j++) {
            __m512bh w = (__m512bh)_mm512_loadu_si512(step + j * BF16_VEC);
            for (int m = 0; m < m_rows; m++) acc[m][j] = _mm512_dpbf16_ps(acc[m][j], xr[m], w);
        }
    }
    add_sums(m_rows, acc, sums, N);
}
ROWS_FN(bf16_1, bf16_block, 1)
ROWS_FN(bf16_2, bf16_block, 2)
ROWS_FN(bf16_3, bf16_block, 3)
ROWS_FN(bf16_4, bf16_block, 4)
static const block_fn bf16_rows[M_STEP] = {bf16_1, bf16_2, bf16_3, bf16_4};

int ts_gemv_bf16(const void *x, int x_bf16, int M, int K, int chunk, const uint16_t *w, int N, void *y, int y_bf16,
                 int threads) {
    if (M < 1 || M > MAX_M || K % BF16_VEC) return 1;  /* before the conversion below reads x */
    uint16_t *xb = (uint16_t *)x;
    if (!x_bf16) {
        xb = aligned_alloc(64, (size_t)M * K * sizeof(uint16_t));  /* K * 2 is a multiple of 64 */
        if (!xb) return 1;
        for (size_t i = 0; i < (size_t)M * K; i += 16)  /* K is a multiple of 32 */
            _mm256_storeu_si256((__m256i *)(xb + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps((const float *)x + i)));
    }
    int failed = gemv(xb, sizeof(uint16_t), M, K, chunk, w, 2, BF16_VEC, NULL, NULL, N, y, y_bf16, threads, bf16_rows);
    if (!x_bf16) free(xb);
    return failed;
}

/* e^x for x <= 0: 2^(x log2 e) split into an integer power (scalef) and 2^f, |f| <= 1/2, by its
   Taylor polynomial (relative error about 1e-7, float32's own). */
static inline __m512 exp_nonpositive(__m512 x) {
    __m512 t = _mm512_mul_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(1.44269504f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147181f));  /* 2^(t-n) = e^f */
    static const float c[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    __m512 p = _mm512_set1_ps(c[0]);
    for (int i = 1; i < 7; i++) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c[i]));
    return _mm512_scalef_ps(p, n);
}

/* One head, one query position: q [hd], keys/values rows of hd for positions 0..L-1, bias [L]
   additive or NULL (all bfloat16); s: L floats of scratch -> out [hd] float32. */
static void attend_head(const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint16_t *bias, int L, int hd,
                        float scale, float *s, float *out) {
    float top = -3.4e38f;
    for (int l = 0; l < L; l++) {  /* s = q . k * scale + bias */
        __m512 acc = _mm512_setzero_ps();
        for (int d = 0; d < hd; d += 32)
            acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(q + d),
                                   (__m512bh)_mm512_loadu_si512(k + (size_t)l * hd + d));
        s[l] = _mm512_reduce_add_ps(acc) * scale + (bias ? bf16_to_f32(bias[l]) : 0.0f);
        top = s[l] > top ? s[l] : top;
    }
    __m512 total = _mm512_setzero_ps();  /* s = e^(s - top) */
    for (int l = 0; l < L; l += 16) {
        __mmask16 live = L - l >= 16 ? 0xffff : (__mmask16)((1u << (L - l)) - 1);
        __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, s + l), _mm512_set1_ps(top)));
        e = _mm512_maskz_mov_ps(live, e);
        _mm512_mask_storeu_ps(s + l, live, e);
        total = _mm512_add_ps(total, e);
    }
    __m512 acc[MAX_HEAD_DIM / 16];  /* out = sum of s[l] v[l] / total */
    for (int d = 0; d < hd / 16; d++) acc[d] = _mm512_setzero_ps();
    for (int l = 0; l < L; l++) {
        __m512 weight = _mm512_set1_ps(s[l]);
        for (int d = 0; d < hd / 16; d++)
            acc[d] = _mm512_fmadd_ps(weight, bf16x16_to_f32(v + (size_t)l * hd + 16 * d), acc[d]);
    }
    __m512 norm = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(total));
    for (int d = 0; d < hd / 16; d++) _mm512_storeu_ps(out + 16 * d, _mm512_mul_ps(acc[d], norm));
}

#define TS_ATTEND 1  /* attend_head is here: ts_attend_bf16 below */

/* 0.5 v (1 + erf(v / sqrt 2)), the exact GELU; erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). */
static inline __m512 gelu(__m512 v) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(0.70710678f)), a = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), a, one));
    static const float c[] = {1.061405429f, -1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f};
    __m512 p = _mm512_set1_ps(c[0]);
    for (int i = 1; i < 5; i++) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c[i]));
    __m512 erf_abs = _mm512_fnmadd_ps(_mm512_mul_ps(p, t), exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a)), one);
    __m512 sign = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32((int)0x80000000u)));
    __m512 erf = _mm512_or_ps(erf_abs, sign);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(one, erf));
}

void ts_gelu(const float *x, float *y, long n) {  /* for the tests: y = gelu(x), n a multiple of 16 */
    for (long i = 0; i < n; i += 16) _mm512_storeu_ps(y + i, gelu(_mm512_loadu_ps(x + i)));
}

static void layer_norm(const float *x, int M, int D, const float *const wb[2], float eps, float *y) {
    for (int m = 0; m < M; m++) {
        const float *xm = x + (size_t)m * D;
        float *ym = y + (size_t)m * D;
        __m512 sum = _mm512_setzero_ps(), squares = _mm512_setzero_ps();
        for (int d = 0; d < D; d += 16) sum = _mm512_add_ps(sum, _mm512_loadu_ps(xm + d));
        __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(sum) / D);
        for (int d = 0; d < D; d += 16) {
            __m512 diff = _mm512_sub_ps(_mm512_loadu_ps(xm + d), mean);
            squares = _mm512_fmadd_ps(diff, diff, squares);
        }
        float var = _mm512_reduce_add_ps(squares) / D + eps;
        __m512 inv = _mm512_set1_ps(1.0f / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(var))));
        for (int d = 0; d < D; d += 16) {
            __m512 n = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xm + d), mean), inv);
            _mm512_storeu_ps(ym + d, _mm512_fmadd_ps(n, _mm512_loadu_ps(wb[0] + d), _mm512_loadu_ps(wb[1] + d)));
        }
    }
}

/* This thread's output columns of x W^T, handed to `to`. x [M, K] float32 (whole, in every thread);
   xb: this thread's bfloat16 scratch; sums [M, N] shared, split by columns. No barrier inside. */
static void linear(const ts_model *model, const ts_linear *lin, const float *x, int M, uint16_t *xb, float *sums,
                   const ts_sink *to) {
    int N = lin->N, K = lin->K, first, last;
    float x_scale[MAX_M];
    thread_blocks(N, &first, &last);
    if (lin->group) {  /* int4: the activations rounded to int8 rows */
        int4_step_sums(lin, x, M, (int8_t *)xb, x_scale, first, last, sums);
    } else if (lin->scale) {
        gemv_blocks(x, sizeof(float), M, K, lin->chunk, lin->w, 1, N, first, last, sums, int8_rows);
    } else {
        for (size_t i = 0; i < (size_t)M * K; i += 16)
            _mm256_storeu_si256((__m256i *)(xb + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
        gemv_blocks(xb, sizeof(uint16_t), M, K, lin->chunk, lin->w, 2, N, first, last, sums, bf16_rows);
    }
    int n0 = first * ROWS, n1 = last * ROWS;
    for (int m = 0; m < M; m++)
        for (int n = n0; n < n1; n += 16) {
            __mmask16 live = n1 - n >= 16 ? 0xffff : (__mmask16)((1u << (n1 - n)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(live, sums + (size_t)m * N + n);
            if (lin->scale) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(live, lin->scale + n));
            if (lin->group) v = _mm512_mul_ps(v, _mm512_set1_ps(x_scale[m]));
            float *y = to->kind == QKV ? NULL : to->y + (size_t)m * N + n;
            if (to->kind == STORE) {
                _mm512_mask_storeu_ps(y, live, v);
            } else if (to->kind == ADD) {
                _mm512_mask_storeu_ps(y, live, _mm512_add_ps(_mm512_maskz_loadu_ps(live, y), v));
            } else if (to->kind == GELU) {
                _mm512_mask_storeu_ps(y, live, gelu(v));
            } else {  /* QKV */
                float lane[16];
                _mm512_storeu_ps(lane, v);
                for (int i = 0; i < 16 && n + i < n1; i++) store_qkv(model, to, m, n + i, lane[i]);
            }
        }
}

static int product_ok(const ts_linear *lin) { return !lin->group || int4_fits(lin); }

static int step_linears_ok(const ts_model *model) {  /* bfloat16, int8 and int4 alike */
    const ts_layer *l = model->layers;
    for (int i = 0; i < model->n_layers; i++, l++) {
        if (!product_ok(&l->qkv) || !product_ok(&l->attn_out) || !product_ok(&l->fc1) || !product_ok(&l->fc2)) return 0;
        if (l->cross_norm[0] && (!product_ok(&l->cross_q) || !product_ok(&l->cross_out))) return 0;
    }
    return product_ok(&model->lm_heads);
}
#define TS_STEP 1  /* layer_norm, linear and step_linears_ok are here: ts_decode_step below */
#else
int ts_has_bf16(void) { return 0; }
#endif

#elif defined(__AVX2__) && defined(__FMA__)  /* Intel and AMD CPUs with AVX2 all have FMA */
/* AVX2 (no AVX-512): int8 products, attention over a bfloat16 cache, and the whole step for int8 and int4 weights.
   Widening each int8 weight to float32 costs two instructions per
   8 weights on top of the products and caps the stream at about 10 GB/s on 2 cores; here the activations
   are rounded to int16 instead (one scale per row: 15 bits of its largest value, far finer than the int8
   weights) and multiplied with the weights widened to int16 by vpmaddwd, 16 weights an instruction pair.
   A chunk (at most 1024 values) sums at most 64 pairs of |127 * 32767| in a lane: no int32 overflow. */
int ts_has_int8(void) { return 1; }
int ts_int8_rounds_x(void) { return 1; }
int ts_has_bf16(void) { return 0; }

static inline float sum_lanes(__m256i v) {  /* float32 first: 8 lanes of up to 2^29 overflow an int32 sum */
    return sum8(_mm256_cvtepi32_ps(v));
}

/* m_rows is a literal at each use below, so the loops over it unroll. x: int16 rows. */
static inline __attribute__((always_inline)) void int8_block(int m_rows, const void *xv, long x_stride, int length,
                                                             const void *blockv, float *sums, int N) {
    const int16_t *x = xv;
    const int8_t *block = blockv;
    for (int m0 = 0; m0 < m_rows; m0 += X_STEP) {
        int pair = m_rows - m0 < X_STEP ? m_rows - m0 : X_STEP;
        __m256i acc[X_STEP][ROWS];
        for (int m = 0; m < X_STEP; m++)
            for (int j = 0; j < ROWS; j++) acc[m][j] = _mm256_setzero_si256();
        for (int k = 0; k < length; k += INT8_VEC) {
            const int8_t *step = block + (size_t)k * ROWS;  /* ROWS x 16 int8: one cache line */
            if (m0 == 0) prefetch((const char *)step, PREFETCH, 1);
            __m256i xr[X_STEP];
            for (int m = 0; m < pair; m++) xr[m] = _mm256_loadu_si256((const __m256i *)(x + (m0 + m) * x_stride + k));
            for (int j = 0; j < ROWS; j++) {
                __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(step + j * INT8_VEC)));
                for (int m = 0; m < pair; m++) acc[m][j] = dot_add(acc[m][j], w, xr[m]);
            }
        }
        for (int m = 0; m < pair; m++)
            for (int j = 0; j < ROWS; j++) sums[(size_t)(m0 + m) * N + j] += sum_lanes(acc[m][j]);
    }
}
#define ROWS_FN(name, block_fn_, n) \
    static void name(const void *x, long s, int len, const void *b, float *sums, int N) { block_fn_(n, x, s, len, b, sums, N); }
ROWS_FN(int8_1, int8_block, 1)
ROWS_FN(int8_2, int8_block, 2)
ROWS_FN(int8_3, int8_block, 3)
ROWS_FN(int8_4, int8_block, 4)
static const block_fn int8_rows[M_STEP] = {int8_1, int8_2, int8_3, int8_4};

int ts_gemv_int8(const void *x, int x_bf16, int M, int K, int chunk, const int8_t *w, const float *scale, int N,
                 void *y, int y_bf16, int threads) {
    if (M < 1 || M > MAX_M || K % INT8_VEC) return 1;
    int16_t *xq = aligned_alloc(64, ((size_t)M * K * sizeof(int16_t) + 63) / 64 * 64);
    float x_scale[MAX_M];
    int failed = !xq || round_rows(x, x_bf16, M, K, 16, xq, x_scale)
                 || gemv(xq, sizeof(int16_t), M, K, chunk, w, 1, INT8_VEC, scale, x_scale, N, y, y_bf16, threads,
                         int8_rows);
    free(xq);
    return failed;
}

/* e^x for x <= 0 (x below -87 gives about e^-87), as the AVX-512 version: 2^n e^f by a degree-6 polynomial. */
static inline __m256 exp_nonpositive(__m256 x) {
    __m256 t = _mm256_mul_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(1.44269504f));
    __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_mul_ps(_mm256_sub_ps(t, n), _mm256_set1_ps(0.693147181f));
    static const float c[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    __m256 p = _mm256_set1_ps(c[0]);
    for (int i = 1; i < 7; i++) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c[i]));
    __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(two_n));  /* n >= -126: a normal 2^n */
}

/* One head, one query position, as the AVX-512 version (bfloat16 q, keys, values and bias; float32
   scores, softmax and sums): the bfloat16 cache is half the bytes of a float32 one, and at a few
   hundred positions reading the cache is a large part of a decode step. */
static void attend_head(const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint16_t *bias, int L, int hd,
                        float scale, float *s, float *out) {
    __m256 qf[MAX_HEAD_DIM / 8];
    for (int d = 0; d < hd / 8; d++) qf[d] = bf16x8_to_f32(q + 8 * d);
    float top = -3.4e38f;
    for (int l = 0; l < L; l++) {  /* s = q . k * scale + bias */
        __m256 acc = _mm256_setzero_ps();
        for (int d = 0; d < hd / 8; d++) acc = _mm256_fmadd_ps(qf[d], bf16x8_to_f32(k + (size_t)l * hd + 8 * d), acc);
        s[l] = sum8(acc) * scale + (bias ? bf16_to_f32(bias[l]) : 0.0f);
        top = s[l] > top ? s[l] : top;
    }
    float total = 0.0f;  /* s = e^(s - top), 8 at a time; the last few through a padded copy */
    for (int l = 0; l < L; l += 8) {
        float part[8];
        int n = L - l < 8 ? L - l : 8;
        for (int i = 0; i < 8; i++) part[i] = i < n ? s[l + i] - top : -87.0f;
        _mm256_storeu_ps(part, exp_nonpositive(_mm256_loadu_ps(part)));
        for (int i = 0; i < n; i++) total += (s[l + i] = part[i]);
    }
    __m256 acc[MAX_HEAD_DIM / 8];  /* out = sum of s[l] v[l] / total */
    for (int d = 0; d < hd / 8; d++) acc[d] = _mm256_setzero_ps();
    for (int l = 0; l < L; l++) {
        __m256 weight = _mm256_set1_ps(s[l]);
        for (int d = 0; d < hd / 8; d++) acc[d] = _mm256_fmadd_ps(weight, bf16x8_to_f32(v + (size_t)l * hd + 8 * d), acc[d]);
    }
    __m256 norm = _mm256_set1_ps(1.0f / total);
    for (int d = 0; d < hd / 8; d++) _mm256_storeu_ps(out + 8 * d, _mm256_mul_ps(acc[d], norm));
}
#define TS_ATTEND 1

/* ---- The whole decode step on AVX2: int8 and int4 weights only (cpu_step.py makes them so) ---- */

/* 0.5 v (1 + erf(v / sqrt 2)), erf as the AVX-512 version (Abramowitz & Stegun 7.1.26). */
static inline __m256 gelu(__m256 v) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 z = _mm256_mul_ps(v, _mm256_set1_ps(0.70710678f));
    __m256 sign = _mm256_and_ps(z, _mm256_set1_ps(-0.0f)), a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, one));
    static const float c[] = {1.061405429f, -1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f};
    __m256 p = _mm256_set1_ps(c[0]);
    for (int i = 1; i < 5; i++) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c[i]));
    __m256 erf_abs = _mm256_fnmadd_ps(_mm256_mul_ps(p, t), exp_nonpositive(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), a), a)), one);
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(one, _mm256_or_ps(erf_abs, sign)));
}

void ts_gelu(const float *x, float *y, long n) {  /* for the tests: y = gelu(x), n a multiple of 8 */
    for (long i = 0; i < n; i += 8) _mm256_storeu_ps(y + i, gelu(_mm256_loadu_ps(x + i)));
}

static void layer_norm(const float *x, int M, int D, const float *const wb[2], float eps, float *y) {
    for (int m = 0; m < M; m++) {
        const float *xm = x + (size_t)m * D;
        float *ym = y + (size_t)m * D;
        __m256 sum = _mm256_setzero_ps(), squares = _mm256_setzero_ps();
        for (int d = 0; d < D; d += 8) sum = _mm256_add_ps(sum, _mm256_loadu_ps(xm + d));
        __m256 mean = _mm256_set1_ps(sum8(sum) / D);
        for (int d = 0; d < D; d += 8) {
            __m256 diff = _mm256_sub_ps(_mm256_loadu_ps(xm + d), mean);
            squares = _mm256_fmadd_ps(diff, diff, squares);
        }
        float var = sum8(squares) / D + eps;
        __m256 inv = _mm256_set1_ps(1.0f / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(var))));
        for (int d = 0; d < D; d += 8) {
            __m256 n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xm + d), mean), inv);
            _mm256_storeu_ps(ym + d, _mm256_fmadd_ps(n, _mm256_loadu_ps(wb[0] + d), _mm256_loadu_ps(wb[1] + d)));
        }
    }
}

static int quantized(const ts_linear *lin) { return lin->scale || (lin->group && int4_fits(lin)); }

static int step_linears_ok(const ts_model *model) {  /* every product int8 or int4: no bfloat16 product on AVX2 */
    const ts_layer *l = model->layers;
    for (int i = 0; i < model->n_layers; i++, l++) {
        if (!quantized(&l->qkv) || !quantized(&l->attn_out) || !quantized(&l->fc1) || !quantized(&l->fc2)) return 0;
        if (l->cross_norm[0] && (!quantized(&l->cross_q) || !quantized(&l->cross_out))) return 0;
    }
    return quantized(&model->lm_heads);
}

/* This thread's output columns of x W^T, handed to `to`, as the AVX-512 version: x [M, K] float32 (whole,
   in every thread) rounded to int16 rows in xq, this thread's scratch; sums [M, N] shared, split by
   columns. No barrier inside. A row with inf or NaN gives NaN outputs (torch's product would carry them). */
static void linear(const ts_model *model, const ts_linear *lin, const float *x, int M, uint16_t *xq, float *sums,
                   const ts_sink *to) {
    int N = lin->N, K = lin->K, first, last;
    float x_scale[MAX_M];
    thread_blocks(N, &first, &last);
    if (lin->group) {  /* int4: the activations rounded to int8 rows */
        int4_step_sums(lin, x, M, (int8_t *)xq, x_scale, first, last, sums);
    } else {
        round_step_rows(x, M, K, 16, xq, x_scale);
        gemv_blocks(xq, sizeof(int16_t), M, K, lin->chunk, lin->w, 1, N, first, last, sums, int8_rows);
    }
    int n0 = first * ROWS, n1 = last * ROWS;
    for (int m = 0; m < M; m++) {
        float *row = sums + (size_t)m * N;
        for (int n = n0; n < n1; n++) row[n] *= (lin->scale ? lin->scale[n] : 1.0f) * x_scale[m];
        if (to->kind == STORE || to->kind == ADD) {
            float *y = to->y + (size_t)m * N;
            for (int n = n0; n < n1; n++) y[n] = to->kind == ADD ? y[n] + row[n] : row[n];
        } else if (to->kind == GELU) {
            float *y = to->y + (size_t)m * N;
            int n = n0;
            for (; n + 8 <= n1; n += 8) _mm256_storeu_ps(y + n, gelu(_mm256_loadu_ps(row + n)));
            if (n < n1) {  /* ROWS (4) columns left */
                float part[8] = {0};
                memcpy(part, row + n, (size_t)(n1 - n) * sizeof(float));
                _mm256_storeu_ps(part, gelu(_mm256_loadu_ps(part)));
                memcpy(y + n, part, (size_t)(n1 - n) * sizeof(float));
            }
        } else {  /* QKV */
            for (int n = n0; n < n1; n++) store_qkv(model, to, m, n, row[n]);
        }
    }
}
#define TS_STEP 1

#else  /* neither AVX-512 nor AVX2 with FMA: the library builds, reports nothing available, and torch's kernels are used */
int ts_has_int8(void) { return 0; }
int ts_has_bf16(void) { return 0; }
#endif

#ifdef TS_ATTEND
/* q [B, H, hd] (strides q_sb, q_sh), k/v [B, H, >= L, hd] (strides kv_sb, kv_sh; rows of hd),
   bias [B, L] additive or NULL -> out [B, H, hd] contiguous. All bfloat16. */
int ts_attend_bf16(const uint16_t *q, long q_sb, long q_sh, const uint16_t *k, const uint16_t *v, long kv_sb,
                   long kv_sh, const uint16_t *bias, long bias_sb, uint16_t *out, int B, int H, int L, int hd,
                   float scale, int threads) {
    if (hd % 32 || hd > MAX_HEAD_DIM || L < 1) return 1;
    float *scores = malloc((size_t)B * H * L * sizeof(float));
    if (!scores) return 1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        float y[MAX_HEAD_DIM];
        attend_head(q + b * q_sb + h * q_sh, k + b * kv_sb + h * kv_sh, v + b * kv_sb + h * kv_sh,
                    bias ? bias + b * bias_sb : NULL, L, hd, scale, scores + (size_t)bh * L, y);
        for (int d = 0; d < hd; d++) out[(size_t)bh * hd + d] = f32_to_bf16(y[d]);
    }
    free(scores);
    return 0;
}
#endif

#ifdef TS_STEP
/* Every (row, head) pair's attention, shared out among the threads, barrier at the end.
   q, out [M, dim] float32; k/v [M, heads, rows, head_dim] bfloat16 of which the first L are read. */
static void attention(const ts_model *model, const float *q, int M, const uint16_t *k, const uint16_t *v, int rows,
                      int L, const uint16_t *bias, float *scores, float *out) {
    int H = model->heads, hd = model->head_dim;
    float scale = 1.0f / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss((float)hd)));
#pragma omp for schedule(static)
    for (int bh = 0; bh < M * H; bh++) {
        int b = bh / H, h = bh % H;
        uint16_t qb[MAX_HEAD_DIM];
        for (int d = 0; d < hd; d++) qb[d] = f32_to_bf16(q[(size_t)b * model->dim + h * hd + d]);
        size_t head = (size_t)bh * rows * hd;
        attend_head(qb, k + head, v + head, bias ? bias + (size_t)b * L : NULL, L, hd, scale, scores,
                    out + (size_t)b * model->dim + h * hd);
    }
}

static size_t aligned(size_t floats) { return (floats + 15) / 16 * 16; }

static int widest_output(const ts_model *m) {
    const ts_layer *l = m->layers;
    int n = m->lm_heads.N;
    const ts_linear *all[] = {&l->qkv, &l->attn_out, &l->cross_q, &l->cross_out, &l->fc1, &l->fc2};
    for (int i = 0; i < 6; i++) n = all[i]->N > n ? all[i]->N : n;
    return n;
}

/* The workspace: q, att [M, dim], hid [M, ffn_dim] and sums [M, widest N], shared by the threads;
   then per thread its normed activations [M, dim], bfloat16 inputs [M, widest K] and scores. */
static size_t shared_floats(const ts_model *m, int M) {
    return 2 * aligned((size_t)M * m->dim) + aligned((size_t)M * m->ffn_dim) + aligned((size_t)M * widest_output(m));
}

static size_t bf16_inputs_floats(const ts_model *m, int M) {
    return aligned((size_t)M * (m->ffn_dim > m->dim ? m->ffn_dim : m->dim) / 2 + 1);
}

static size_t own_floats(const ts_model *m, int M) {
    return aligned((size_t)M * m->dim) + bf16_inputs_floats(m, M) + aligned(m->max_len > m->text_len ? m->max_len : m->text_len);
}

/* Floats of workspace ts_decode_step needs for M rows and up to `threads` threads. */
long ts_step_workspace(const ts_model *m, int M, int threads) {
    return (long)(shared_floats(m, M) + own_floats(m, M) * threads);
}

/* x [M, dim] float32: the embedded codes of position pos (summed codebook embeddings plus the
   position's sinusoid), changed in place -> logits [M, lm_heads.N] float32. Attention reads the
   cache's positions 0..pos (pos written here). Returns 1 for shapes it does not take. */
int ts_decode_step(const ts_model *model, float *x, int M, int pos, float *logits, float *work, int threads) {
    int D = model->dim, hd = model->head_dim;
    if (M < 1 || M > MAX_M || hd % 32 || hd > MAX_HEAD_DIM || D % 32 || model->ffn_dim % 32 || pos < 0
        || pos >= model->max_len || model->heads * hd != D || !step_linears_ok(model))
        return 1;
    float *q = work, *att = q + aligned((size_t)M * D), *hid = att + aligned((size_t)M * D);
    float *sums = hid + aligned((size_t)M * model->ffn_dim), *own = work + shared_floats(model, M);
    size_t own_size = own_floats(model, M);
#pragma omp parallel num_threads(threads)
    {
        float *a = own + own_size * omp_get_thread_num();  /* this thread's normed activations */
        uint16_t *xb = (uint16_t *)(a + aligned((size_t)M * D));
        float *scores = a + aligned((size_t)M * D) + bf16_inputs_floats(model, M);
        for (int i = 0; i < model->n_layers; i++) {
            const ts_layer *l = &model->layers[i];
            layer_norm(x, M, D, l->attn_norm, model->eps, a);
            ts_sink to_cache = {.kind = QKV, .y = q, .k_cache = l->k_cache, .v_cache = l->v_cache, .pos = pos};
            linear(model, &l->qkv, a, M, xb, sums, &to_cache);
#pragma omp barrier
            attention(model, q, M, l->k_cache, l->v_cache, model->max_len, pos + 1, NULL, scores, att);
            linear(model, &l->attn_out, att, M, xb, sums, &(ts_sink){.kind = ADD, .y = x});
#pragma omp barrier
            if (l->cross_norm[0]) {
                layer_norm(x, M, D, l->cross_norm, model->eps, a);
                linear(model, &l->cross_q, a, M, xb, sums, &(ts_sink){.kind = STORE, .y = q});
#pragma omp barrier
                attention(model, q, M, l->cross_k, l->cross_v, model->text_len, model->text_len, model->cross_bias,
                          scores, att);
                linear(model, &l->cross_out, att, M, xb, sums, &(ts_sink){.kind = ADD, .y = x});
#pragma omp barrier
            }
            layer_norm(x, M, D, l->mlp_norm, model->eps, a);
            linear(model, &l->fc1, a, M, xb, sums, &(ts_sink){.kind = GELU, .y = hid});
#pragma omp barrier
            linear(model, &l->fc2, hid, M, xb, sums, &(ts_sink){.kind = ADD, .y = x});
#pragma omp barrier
        }
        layer_norm(x, M, D, model->norm, model->eps, a);
        linear(model, &model->lm_heads, a, M, xb, sums, &(ts_sink){.kind = STORE, .y = logits});
    }
    return 0;
}
#endif
