/* Two passes of the Oobleck decoder (stable_audio/cpu.py), each one pass over memory where torch
   makes several; built with the same builder as musicgen's kernels.

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
#include <stdint.h>
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

int ts_snake_version(void) { return 3; }

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
