/* The diffusion families' CPU kernels (diffusion/ops.py, for stable_audio/cpu.py, acestep/cpu.py and the
   Oobleck decoder of diffusion/oobleck.py), built by native.py: three passes of the Oobleck decoder,
   three of its int8 form, three of the DiTs, each one pass over memory where torch makes several,
   and the DiTs' attention (AVX512-BF16, at the end of the file).

   ts_add_rows: x[r, t] += y[r, t] + bias[r % channels], x float32, y float32 or bfloat16: the
   residual add after a unit's 1x1 convolution, without a float32 copy of y first.

   ts_interleave: y[b, c, j * s + r] = float(phases[b, r, c, j]): the s phases of a transposed
   convolution (computed as one ordinary convolution) written as the samples they are; torch's
   permuted copy reads across rows and takes several times as long.

   ts_snake: the Snake activation,

       y = x + inv_beta[c] * sin(alpha[c] * x)^2

   over the rows of a [rows, length] view, row r being channel r % channels. torch computes this as
   five full-size passes, each writing a new tensor; the decoder runs it on some 800 million values
   (sao-small, 11.9 s), where those passes cost more than a tenth of the decode.

   x is float32 or bfloat16 (x_bf16), rows x_stride values apart; y is float32 or bfloat16 (y_bf16,
   rounded to nearest even, as torch rounds), rows y_stride apart. The sums are float32.

   sin^2 needs no sign: u = k pi + r with |r| <= pi/2, sin^2(u) = sin^2(r). r comes from a three-part
   pi (each part's product with k exact for |k| < 2^14, so r is exact to float32 rounding for
   |u| < 5e4), sin(r) from its Taylor polynomial to r^11 (error below 4e-8 on [-pi/2, pi/2]).
   Past |u| of about 1e7 the nearest multiple of pi is no longer found (float32 cannot tell
   the phase there anyway).
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {  /* round to nearest even; NaN stays NaN */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float sin_squared(float u) {
    const float round = 12582912.0f;  /* 1.5 * 2^23: adding and taking it away rounds to an integer */
    float k = (u * 0.31830988618379067f + round) - round;
    float r = u - k * 3.140625f;
    r -= k * 9.675025939941406e-4f;
    r -= k * 1.5099580252808664e-07f;
    float r2 = r * r;
    float s = r * (1.0f + r2 * (-1.6666667e-1f + r2 * (8.3333333e-3f + r2 * (-1.9841270e-4f
                  + r2 * (2.7557319e-6f + r2 * -2.5052108e-8f)))));
    return s * s;
}

int ts_kernels_version(void) { return 6; }

void ts_interleave(float *y, long y_stride, const void *phases, int phases_bf16, int batch, int stride,
                   int channels, long frames, int threads) {
    const long rows = (long)batch * channels;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long row = 0; row < rows; row++) {
        const long b = row / channels, c = row % channels;
        float *yr = y + row * y_stride;
        for (int r = 0; r < stride; r++) {
            const long src = ((b * stride + r) * channels + c) * frames;
            if (phases_bf16) {
                const uint16_t *p = (const uint16_t *)phases + src;
                for (long j = 0; j < frames; j++) yr[j * stride + r] = bf16_to_f32(p[j]);
            } else {
                const float *p = (const float *)phases + src;
                for (long j = 0; j < frames; j++) yr[j * stride + r] = p[j];
            }
        }
    }
}

void ts_add_rows(float *x, long x_stride, const void *y, int y_bf16, long y_stride, const float *bias,
                 long rows, int channels, long length, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < rows; r++) {
        const float b = bias ? bias[r % channels] : 0.0f;
        float *xr = x + r * x_stride;
        if (y_bf16) {
            const uint16_t *yr = (const uint16_t *)y + r * y_stride;
#pragma omp simd
            for (long t = 0; t < length; t++) xr[t] += bf16_to_f32(yr[t]) + b;
        } else {
            const float *yr = (const float *)y + r * y_stride;
#pragma omp simd
            for (long t = 0; t < length; t++) xr[t] += yr[t] + b;
        }
    }
}

void ts_snake(const void *x, int x_bf16, long x_stride, void *y, int y_bf16, long y_stride,
              const float *alpha, const float *inv_beta, long rows, int channels, long length, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < rows; r++) {
        const float a = alpha[r % channels], ib = inv_beta[r % channels];
        const float *xf = (const float *)x + r * x_stride;
        const uint16_t *xh = (const uint16_t *)x + r * x_stride;
        float *yf = (float *)y + r * y_stride;
        uint16_t *yh = (uint16_t *)y + r * y_stride;
        if (!x_bf16 && !y_bf16) {
#pragma omp simd
            for (long t = 0; t < length; t++) yf[t] = xf[t] + ib * sin_squared(a * xf[t]);
        } else if (!x_bf16) {
#pragma omp simd
            for (long t = 0; t < length; t++) yh[t] = f32_to_bf16(xf[t] + ib * sin_squared(a * xf[t]));
        } else if (!y_bf16) {
#pragma omp simd
            for (long t = 0; t < length; t++) {
                float v = bf16_to_f32(xh[t]);
                yf[t] = v + ib * sin_squared(a * v);
            }
        } else {
#pragma omp simd
            for (long t = 0; t < length; t++) {
                float v = bf16_to_f32(xh[t]);
                yh[t] = f32_to_bf16(v + ib * sin_squared(a * v));
            }
        }
    }
}

/* The Oobleck decoder's int8 passes (OobleckDecoderCPU with quantize="int8"): a convolution of
   `taps` taps as one int8 product, W [C_out, taps * C] times columns [taps * C, L], with one scale
   for the whole tile of activations (a column mixes `taps` samples, so a scale per sample would not
   factor out of the sums) and one per output channel of the weights.

   ts_quantize_taps: cols[(k * channels + c) * length + t] = round(x[c, t + k * dilation] / s), s =
   top / 127, top = max |x[:, :length + (taps - 1) * dilation]| (computed when `top` < 0); s returned.
   x float32 or bfloat16, rows x_stride apart.

   ts_dequantize_rows: out[r, t] = v + inv_beta[r] * sin^2(alpha[r] * v) (Snake; without alpha, v),
   v = acc[r, t] * scale[r] + bias[r], rounded to bfloat16; returns max |out| (the next product's
   activation scale, without another pass).

   ts_add_dequantized: x[r, t] += acc[r, t] * scale[r] + bias[r], x float32 rows x_stride apart: the
   residual add after a unit's 1x1 convolution. */

/* max |x[0..n)| and q[t] = round(x[t] * inv) (half to even), x float32 or bfloat16: dynamic int8's two
   passes over a row, for ts_quantize_taps and ts_quantize_rows. */
static inline float abs_max(const void *x, int x_bf16, long n) {
    const float *xf = (const float *)x;
    const uint16_t *xh = (const uint16_t *)x;
    float m = 0.0f;
    if (x_bf16) {
#pragma omp simd reduction(max:m)
        for (long t = 0; t < n; t++) { float a = bf16_to_f32(xh[t]); a = a < 0 ? -a : a; m = a > m ? a : m; }
    } else {
#pragma omp simd reduction(max:m)
        for (long t = 0; t < n; t++) { float a = xf[t] < 0 ? -xf[t] : xf[t]; m = a > m ? a : m; }
    }
    return m;
}

static inline void quantize_row(const void *x, int x_bf16, long n, float inv, int8_t *q) {
    const float round = 12582912.0f;  /* adding and taking 1.5 * 2^23 rounds to even */
    const float *xf = (const float *)x;
    const uint16_t *xh = (const uint16_t *)x;
    if (x_bf16) {
#pragma omp simd
        for (long t = 0; t < n; t++) q[t] = (int8_t)((bf16_to_f32(xh[t]) * inv + round) - round);
    } else {
#pragma omp simd
        for (long t = 0; t < n; t++) q[t] = (int8_t)((xf[t] * inv + round) - round);
    }
}

float ts_quantize_taps(const void *x, int x_bf16, long x_stride, int channels, int taps, int dilation, long length,
                       float top, int8_t *cols, int threads) {
    const long width = length + (long)(taps - 1) * dilation;
    if (top < 0.0f) {
        top = 0.0f;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(max:top)
        for (int c = 0; c < channels; c++) {
            const float m = abs_max((const char *)x + c * x_stride * (x_bf16 ? 2 : 4), x_bf16, width);
            top = m > top ? m : top;
        }
    }
    float s = top / 127.0f;
    s = s > 1e-12f ? s : 1e-12f;
    const float inv = 1.0f / s;
#pragma omp parallel num_threads(threads)
    {
        int8_t *q = taps > 1 ? (int8_t *)malloc(width) : 0;  /* a channel quantized once, then copied per tap */
#pragma omp for schedule(static)
        for (int c = 0; c < channels; c++) {
            int8_t *row = taps > 1 ? q : cols + (long)c * length;
            quantize_row((const char *)x + c * x_stride * (x_bf16 ? 2 : 4), x_bf16, width, inv, row);
            if (taps > 1)
                for (int k = 0; k < taps; k++) memcpy(cols + ((long)k * channels + c) * length, q + (long)k * dilation, length);
        }
        free(q);
    }
    return s;
}

float ts_dequantize_rows(const int32_t *acc, long rows, long length, const float *scale, const float *bias,
                         const float *alpha, const float *inv_beta, uint16_t *out, int threads) {
    float top = 0.0f;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(max:top)
    for (long r = 0; r < rows; r++) {
        const int32_t *a = acc + r * length;
        uint16_t *o = out + r * length;
        const float sr = scale[r], b = bias ? bias[r] : 0.0f;
        float m = 0.0f;
        if (alpha) {
            const float al = alpha[r], ib = inv_beta[r];
#pragma omp simd reduction(max:m)
            for (long t = 0; t < length; t++) {
                float v = (float)a[t] * sr + b;
                uint16_t h = f32_to_bf16(v + ib * sin_squared(al * v));
                o[t] = h;
                float w = bf16_to_f32(h & 0x7fffu);
                m = w > m ? w : m;
            }
        } else {
#pragma omp simd reduction(max:m)
            for (long t = 0; t < length; t++) {
                uint16_t h = f32_to_bf16((float)a[t] * sr + b);
                o[t] = h;
                float w = bf16_to_f32(h & 0x7fffu);
                m = w > m ? w : m;
            }
        }
        top = m > top ? m : top;
    }
    return top;
}

void ts_add_dequantized(float *x, long x_stride, const int32_t *acc, const float *scale, const float *bias,
                        long rows, long length, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < rows; r++) {
        const int32_t *a = acc + r * length;
        float *xr = x + r * x_stride;
        const float sr = scale[r], b = bias ? bias[r] : 0.0f;
#pragma omp simd
        for (long t = 0; t < length; t++) xr[t] += (float)a[t] * sr + b;
    }
}

/* The DiT's small passes, each one pass where torch makes several.

   ts_quantize_rows: x [M, K] (float32 or bfloat16, rows x_stride apart) -> int8 q [M, K] and
   scale [M]: q = round(x / scale), scale = max|x| / 127 per row (dynamic int8 activations).
   ts_dequantize: out [M, N] bfloat16 = acc [M, N] (int32) * x_scale[m] * w_scale[n] + bias[n].
   ts_norm_rotate: in place on bfloat16 rows of D (at most 512) at x + b*sb + h*sh + t*st: over D a
   LayerNorm (normalize 1) or an RMSNorm (normalize 2: x / sqrt(mean(x^2) + eps), as diffusers'
   RMSNorm) or none (0), weight and bias optional, then diffusers' rotary embedding (use_real,
   unbind dim -2) on the first `rot` values with cos, sin [S, rot] float32; float32 throughout,
   one rounding at the end. */
void ts_quantize_rows(const void *x, int x_bf16, long x_stride, long M, int K, int8_t *q, float *scale,
                      int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long m = 0; m < M; m++) {
        const void *xm = (const char *)x + m * x_stride * (x_bf16 ? 2 : 4);
        float s = abs_max(xm, x_bf16, K) / 127.0f;
        s = s > 1e-12f ? s : 1e-12f;
        scale[m] = s;
        quantize_row(xm, x_bf16, K, 1.0f / s, q + m * (long)K);
    }
}

void ts_dequantize(const int32_t *acc, long M, int N, const float *x_scale, const float *w_scale,
                   const float *bias, uint16_t *out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long m = 0; m < M; m++) {
        const int32_t *a = acc + m * (long)N;
        uint16_t *o = out + m * (long)N;
        const float sx = x_scale[m];
        if (bias) {
#pragma omp simd
            for (int n = 0; n < N; n++) o[n] = f32_to_bf16((float)a[n] * (sx * w_scale[n]) + bias[n]);
        } else {
#pragma omp simd
            for (int n = 0; n < N; n++) o[n] = f32_to_bf16((float)a[n] * (sx * w_scale[n]));
        }
    }
}

void ts_norm_rotate(uint16_t *x, long sb, long sh, long st, int B, int H, int S, int D, int normalize,
                    const float *weight, const float *bias, float eps, const float *cos, const float *sin, int rot,
                    int threads) {
    const long rows = (long)B * H * S;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long row = 0; row < rows; row++) {
        const long b = row / ((long)H * S), h = row / S % H, t = row % S;
        uint16_t *xr = x + b * sb + h * sh + t * st;
        float v[512], y[512];  /* D <= 512 */
        for (int d = 0; d < D; d++) v[d] = bf16_to_f32(xr[d]);
        if (normalize == 2) {
            float power = 0.0f;
            for (int d = 0; d < D; d++) power += v[d] * v[d];
            const float inv = 1.0f / sqrtf(power / D + eps);
            for (int d = 0; d < D; d++) v[d] = (weight ? v[d] * inv * weight[d] : v[d] * inv) + (bias ? bias[d] : 0.0f);
        } else if (normalize) {
            float mean = 0.0f, var = 0.0f;
            for (int d = 0; d < D; d++) mean += v[d];
            mean /= D;
            for (int d = 0; d < D; d++) { float c = v[d] - mean; var += c * c; }
            const float inv = 1.0f / sqrtf(var / D + eps);
            for (int d = 0; d < D; d++) {
                float n = (v[d] - mean) * inv;
                v[d] = (weight ? n * weight[d] : n) + (bias ? bias[d] : 0.0f);
            }
        }
        const int half = rot / 2;
        const float *c = cos + t * (long)rot, *s = sin + t * (long)rot;
        for (int d = 0; d < half; d++) y[d] = v[d] * c[d] - v[d + half] * s[d];
        for (int d = half; d < rot; d++) y[d] = v[d] * c[d] + v[d - half] * s[d];
        for (int d = rot; d < D; d++) y[d] = v[d];
        for (int d = 0; d < D; d++) xr[d] = f32_to_bf16(y[d]);
    }
}

/* ACE-Step's AdaLN passes over the float32 residual stream x [rows, W] (contiguous; row r belongs to batch
   element r / per_batch), each one pass where torch makes five to eight (each its own parallel region:
   on a busy machine every region waits for its slowest thread).

   ts_modulated_rms: out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, then * (1 + scale[b]) + shift[b]
   where scale and shift (rows mod_stride apart) are given; out float32 or bfloat16 (out_bf16).
   ts_gated_add: x[r] += y[r] * gate[b] (gate rows gate_stride apart; NULL: x[r] += y[r]), y float32 or
   bfloat16 [rows, W] contiguous. */
void ts_modulated_rms(const float *x, long rows, int W, long per_batch, const float *weight, float eps,
                      const float *scale, const float *shift, long mod_stride, void *out, int out_bf16, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * W;
        float power = 0.0f;
#pragma omp simd reduction(+:power)
        for (int d = 0; d < W; d++) power += xr[d] * xr[d];
        const float inv = 1.0f / sqrtf(power / W + eps);
        const long b = r / per_batch;
        const float *sc = scale ? scale + b * mod_stride : 0, *sh = shift ? shift + b * mod_stride : 0;
        float *of = (float *)out + r * W;
        uint16_t *oh = (uint16_t *)out + r * W;
        for (int d = 0; d < W; d++) {
            float v = xr[d] * inv * weight[d];
            if (sc) v = v * (1.0f + sc[d]) + sh[d];
            if (out_bf16) oh[d] = f32_to_bf16(v); else of[d] = v;
        }
    }
}

void ts_gated_add(float *x, const void *y, int y_bf16, long rows, int W, long per_batch, const float *gate,
                  long gate_stride, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < rows; r++) {
        float *xr = x + r * W;
        const float *yf = (const float *)y + r * W;
        const uint16_t *yh = (const uint16_t *)y + r * W;
        const float *g = gate ? gate + (r / per_batch) * gate_stride : 0;
        for (int d = 0; d < W; d++) {
            float v = y_bf16 ? bf16_to_f32(yh[d]) : yf[d];
            xr[d] += g ? v * g[d] : v;
        }
    }
}

/* ts_attention_bf16: softmax(q k^T * scale) v for every (batch, head), bfloat16 in and out, float32
   scores and sums, for the DiT's self- and cross-attention (many queries: torch's CPU flash kernel
   reaches about a fifth of what the AVX512-BF16 dot products give).

   q [B, H, Tq, D], k and v [B, H_kv, Tk, D] with any strides over (batch, head, position), the D
   values of a position contiguous; head h reads key/value head h / (H / H_kv). out [B, Tq, H, D]
   contiguous (the layout the output projection reads). D a multiple of 16, at most 128.
   window >= 0: query t sees the keys j with |t - j| <= window only (ACE-Step's sliding-window
   layers; the blocks of 64 keys wholly outside a row group's window are skipped); -1: all keys.

   Per head: keys are packed as pairs of dimensions ([D/2][Tk][2]) and values as pairs of
   positions ([Tk/2][D][2]), the operand layouts of the dot-product instruction; then 4 query rows
   at a time: their scores against every key (held whole: Tk is at most a few thousand), softmax in
   float32, the probabilities rounded to bfloat16 (as torch's kernel rounds them) times the values.
   Returns 0, or 1 for shapes it does not take (the caller uses torch). */
#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#include <stdlib.h>

int ts_has_attention(void) { return 1; }

static inline __m512 exp_nonpositive(__m512 x) {  /* e^x for x <= 0, relative error about 2e-7 */
    __m512 t = _mm512_mul_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(1.44269504f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147181f));  /* 2^(t-n) = e^f */
    static const float c[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    __m512 p = _mm512_set1_ps(c[0]);
    for (int i = 1; i < 7; i++) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c[i]));
    return _mm512_scalef_ps(p, n);
}

/* scores[r][j] = scale * q_r . k_j for R rows and the packed keys j0 <= j < j1 (multiples of 64). */
static inline __attribute__((always_inline)) void score_rows(const int R, const uint32_t *q32[4], int D2,
                                                               const uint32_t *kp, int Tp, float scale,
                                                               float *scores, int j0, int j1) {
    for (int j = j0; j < j1; j += 64) {
        __m512 acc[4][4];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
        for (int d2 = 0; d2 < D2; d2++) {
            const uint32_t *row = kp + (size_t)d2 * Tp + j;
            __m512bh kv[4];
            for (int c = 0; c < 4; c++) kv[c] = (__m512bh)_mm512_loadu_si512(row + 16 * c);
            for (int r = 0; r < R; r++) {
                __m512bh qb = (__m512bh)_mm512_set1_epi32((int)q32[r][d2]);
                for (int c = 0; c < 4; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], qb, kv[c]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int c = 0; c < 4; c++)
                _mm512_storeu_ps(scores + (size_t)r * Tp + j + 16 * c, _mm512_mul_ps(acc[r][c], _mm512_set1_ps(scale)));
    }
}

/* out_r = (p_r / sum_r) V for R rows: p as bfloat16 pairs [Tp/2], V packed [Tp/2][D][2], over the
   positions j0 <= j < j1 (even). */
static inline __attribute__((always_inline)) void weigh_rows(const int R, const int DV, const uint32_t *p32[4],
                                                               const float inv[4], const uint32_t *vp, int j0,
                                                               int j1, uint16_t *out[4]) {
    __m512 acc[4][8];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < DV; c++) acc[r][c] = _mm512_setzero_ps();
    for (int j2 = j0 / 2; j2 < j1 / 2; j2++) {
        const uint32_t *row = vp + (size_t)j2 * DV * 16;
        __m512bh vv[8];
        for (int c = 0; c < DV; c++) vv[c] = (__m512bh)_mm512_loadu_si512(row + 16 * c);
        for (int r = 0; r < R; r++) {
            __m512bh pb = (__m512bh)_mm512_set1_epi32((int)p32[r][j2]);
            for (int c = 0; c < DV; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pb, vv[c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < DV; c++) {
            __m512 o = _mm512_mul_ps(acc[r][c], _mm512_set1_ps(inv[r]));
            _mm256_storeu_si256((__m256i *)(out[r] + 16 * c), (__m256i)_mm512_cvtneps_pbh(o));
        }
}

/* weigh_rows with R and DV as constants (so that its loops unroll into registers). */
static void weigh(int R, int DV, const uint32_t **p32, const float *inv, const uint32_t *vp, int j0, int j1,
                  uint16_t **out) {
#define WEIGH(dv) case dv: { if (R == 1) weigh_rows(1, dv, p32, inv, vp, j0, j1, out); \
                             else if (R == 2) weigh_rows(2, dv, p32, inv, vp, j0, j1, out); \
                             else weigh_rows(4, dv, p32, inv, vp, j0, j1, out); } break;
    switch (DV) { WEIGH(1) WEIGH(2) WEIGH(3) WEIGH(4) WEIGH(5) WEIGH(6) WEIGH(7) WEIGH(8) }
#undef WEIGH
}

/* Lanes j .. j + 15 that lie in [lo, hi), as a mask. */
static inline __mmask16 lanes_within(int j, int lo, int hi) {
    const int a = lo - j < 0 ? 0 : lo - j, b = hi - j > 16 ? 16 : hi - j;
    return a >= b ? 0 : (__mmask16)(((1u << b) - 1) & ~((1u << a) - 1));
}

/* One row of scores, computed over [j0, j1) -> bfloat16 e^(s - max) into p there, zero outside the
   keys [lo, hi) it sees; returns 1 / their sum. */
static float softmax_row(float *s, int lo, int hi, int j0, int j1, uint16_t *p) {
    __m512 top = _mm512_set1_ps(-3.4e38f);
    int j = lo;
    for (; j + 16 <= hi; j += 16) top = _mm512_max_ps(top, _mm512_loadu_ps(s + j));
    float m = _mm512_reduce_max_ps(top);
    for (; j < hi; j++) m = s[j] > m ? s[j] : m;
    __m512 total = _mm512_setzero_ps();
    for (j = j0; j < j1; j += 16) {
        __mmask16 real = lanes_within(j, lo, hi);
        __m512 e = _mm512_maskz_mov_ps(real, exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(s + j), _mm512_set1_ps(m))));
        __m256bh h = _mm512_cvtneps_pbh(e);
        _mm256_storeu_si256((__m256i *)(p + j), (__m256i)h);
        /* the sum of what the values are weighed by: the rounded probabilities */
        __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
        total = _mm512_add_ps(total, back);
    }
    return 1.0f / _mm512_reduce_add_ps(total);
}

int ts_attention_bf16(const uint16_t *q, long q_sb, long q_sh, long q_st, const uint16_t *k, long k_sb, long k_sh,
                      long k_st, const uint16_t *v, long v_sb, long v_sh, long v_st, uint16_t *out, int B, int H,
                      int H_kv, int Tq, int Tk, int D, float scale, int window, int threads) {
    if (D % 16 || D > 128 || D < 16 || Tk < 1 || Tq < 1 || H_kv < 1 || H % H_kv) return 1;
    const int D2 = D / 2, DV = D / 16, Tp = (Tk + 63) / 64 * 64;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        uint32_t *kp = aligned_alloc(64, (size_t)D2 * Tp * 4);
        uint32_t *vp = aligned_alloc(64, (size_t)(Tp / 2) * D * 4);
        float *scores = aligned_alloc(64, (size_t)4 * Tp * 4);
        uint16_t *p = aligned_alloc(64, (size_t)4 * Tp * 2);
        if (!kp || !vp || !scores || !p) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (long bh = 0; bh < (long)B * H; bh++) {
            if (failed) continue;
            const int b = (int)(bh / H), h = (int)(bh % H), hk = h / (H / H_kv);
            const uint16_t *kh = k + b * k_sb + hk * k_sh, *vh = v + b * v_sb + hk * v_sh;
            for (int j = 0; j < Tp; j++) {  /* keys: [D/2][Tp] pairs of dimensions, zero past Tk */
                const uint32_t *key = (const uint32_t *)(kh + (j < Tk ? j : 0) * k_st);
                for (int d2 = 0; d2 < D2; d2++) kp[(size_t)d2 * Tp + j] = j < Tk ? key[d2] : 0;
            }
            for (int j2 = 0; j2 < Tp / 2; j2++) {  /* values: [Tp/2][D] pairs of positions */
                uint32_t *row = vp + (size_t)j2 * D;
                const int j = 2 * j2;
                for (int d = 0; d < D; d++) {
                    uint32_t lo = j < Tk ? vh[j * v_st + d] : 0, hi = j + 1 < Tk ? vh[(j + 1) * v_st + d] : 0;
                    row[d] = lo | hi << 16;
                }
            }
            for (int t0 = 0; t0 < Tq; t0 += 4) {
                const int R = Tq - t0 < 4 ? Tq - t0 : 4;
                const uint32_t *q32[4], *p32[4];
                uint16_t *o[4];
                float inv[4];
                for (int r = 0; r < 4; r++) {
                    int t = t0 + (r < R ? r : 0);
                    q32[r] = (const uint32_t *)(q + b * q_sb + h * q_sh + t * q_st);
                    p32[r] = (const uint32_t *)(p + (size_t)r * Tp);
                    o[r] = out + (((size_t)b * Tq + t) * H + h) * D;
                }
                int j0 = 0, j1 = Tp;  /* the blocks of 64 keys some row of the group sees */
                if (window >= 0) {
                    const int lo = t0 - window, hi = t0 + R + window;
                    j0 = lo < 0 ? 0 : lo / 64 * 64;
                    j1 = hi >= Tk ? Tp : (hi + 63) / 64 * 64;
                }
                if (R == 4) score_rows(4, q32, D2, kp, Tp, scale, scores, j0, j1);
                else for (int r = 0; r < R; r++)
                    score_rows(1, q32 + r, D2, kp, Tp, scale, scores + (size_t)r * Tp, j0, j1);
                for (int r = 0; r < R; r++) {
                    int lo = 0, hi = Tk;
                    if (window >= 0) {
                        lo = t0 + r - window < 0 ? 0 : t0 + r - window;
                        hi = t0 + r + window + 1 > Tk ? Tk : t0 + r + window + 1;
                    }
                    inv[r] = softmax_row(scores + (size_t)r * Tp, lo, hi, j0, j1, p + (size_t)r * Tp);
                }
                const int step = DV > 4 ? 2 : 4;  /* rows per pass: step * DV accumulators */
                for (int r = 0; r < R; r += step) {
                    const int n = R - r < step ? R - r : step;
                    if (n == step) weigh(step, DV, p32 + r, inv + r, vp, j0, j1, o + r);
                    else for (int i = r; i < R; i++) weigh(1, DV, p32 + i, inv + i, vp, j0, j1, o + i);
                }
            }
        }
        free(kp); free(vp); free(scores); free(p);
    }
    return failed;
}
#else
int ts_has_attention(void) { return 0; }
int ts_attention_bf16(void) { return 1; }
#endif
