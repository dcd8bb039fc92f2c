/* bfloat16 products on AMX tiles, included by _native.c (x86-64 gcc builds only).
 *
 * out = act(A @ B + bias) for bf16 A (M x Kd, rows contiguous, read where they lie), B (Kd x N, any
 * two strides) and out (any two strides), summed in float32. AMX multiplies a 16 x 32 tile of A by
 * B in "VNNI" order (pairs of rows of B interleaved), so each thread repacks one block of 32 columns
 * of B at a time into a scratch of Kd x 32 values it keeps between calls: B is never copied whole,
 * and the extra memory does not grow with the batch. The 32 x 32 float32 sums of a micro-tile go
 * through a scratch on their way to the output, where bias, activation and rounding are applied.
 *
 * A 1x1 convolution maps on it three ways (ops/amx.py): NCHW, per image, A = W and B = the image's
 * C x pixels; channels_last with A = the pixels' rows of channels and B = W^T; or channels_last
 * turned, A = W and B = the pixels' rows read as columns (y^T = W x^T), the output stored
 * transposed. Which is faster is measured, not ruled.
 */
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef AMX_A_BYTES
#define AMX_A_BYTES 524288L /* rows of A per work item: those stay in L2 while B's blocks pass (each
                              * block of B is repacked per item: 256 KiB ran deep layers 1.1-1.2x slower) */
#endif

typedef struct {
    const uint16_t *a; long lda, an;  /* A(m, kk) at a + m*lda + kk*sak (+ image*an) */
    long sak;                         /* 1: A's rows read in place; else lda is 1 and A is repacked */
    const uint16_t *b; long sbk, sbn, bn; /* B(kk, n) at b + kk*sbk + n*sbn (+ image*bn) */
    void *out; long som, son, on;     /* out(m, n) at out + m*som + n*son (+ image*on), bf16 or float32 */
    int out_f32, accumulate;          /* float32 output; add to it instead of overwriting it */
    int sum_images;                   /* the images' products summed into one output (on unused) */
    const uint16_t *bias; int bias_rows; /* NULL, or bias[m] (bias_rows) or bias[n] */
    long images, M, N, Kd;
    int act;
    long tm, nchunk, mtiles, nchunks; /* rows of A and blocks of 32 columns per work item */
    int failed;
} Amx;

typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

static int amx_ready = 0; /* the CPU has AMX-BF16 and the kernel let this process use the tiles */

static void amx_init(void)
{
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    int tiles = (d >> 24) & 1, bf16 = (d >> 22) & 1, avx512bw = (b >> 30) & 1;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
    int avx512bf16 = (a >> 5) & 1;
    if (!(tiles && bf16 && avx512bw && avx512bf16)) return;
    /* Linux hands out the tile state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) */
    amx_ready = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

/* r[i] becomes column i of the 16 x 16 matrix of 32-bit words whose rows were r[0..15]. */
static inline void transpose16x16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    }
}

/* Columns [n0, n0 + nb) of B into bp in VNNI order: bp[h][kk/2][16][2], h the half of 16 columns;
 * rows past Kd and columns past nb are zeros (they meet zeros of A or are never stored). */
static void amx_pack_b(const Amx *j, const uint16_t *b, long n0, long nb, long kpad, uint16_t *bp)
{
    long pairs = kpad / 2;
    uint16_t *half1 = bp + pairs * 32;
    __mmask32 cols = nb >= 32 ? 0xffffffffu : (__mmask32)((1u << nb) - 1);
    if (j->sbn == 1) { /* rows of B contiguous: interleave each pair of rows */
        const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                            39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
        const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
        for (long q = 0; q < pairs; q++) {
            long k0 = 2 * q;
            __m512i r0 = _mm512_setzero_si512(), r1 = _mm512_setzero_si512();
            if (k0 < j->Kd) r0 = _mm512_maskz_loadu_epi16(cols, b + k0 * j->sbk + n0);
            if (k0 + 1 < j->Kd) r1 = _mm512_maskz_loadu_epi16(cols, b + (k0 + 1) * j->sbk + n0);
            _mm512_storeu_si512(bp + q * 32, _mm512_permutex2var_epi16(r0, lo, r1));
            _mm512_storeu_si512(half1 + q * 32, _mm512_permutex2var_epi16(r0, hi, r1));
        }
        return;
    }
    if (j->sbk == 1) { /* pairs of B's rows adjacent: a transpose of 32-bit words, 16 x 16 at a time */
        __m512i r[16];
        for (long q0 = 0; q0 < pairs; q0 += 16) { /* pairs is a multiple of 16 */
            long valid = j->Kd - 2 * q0; /* values of each column in this group (odd: the last alone) */
            __mmask32 km = valid <= 0 ? 0 : valid >= 32 ? 0xffffffffu : (__mmask32)((1u << valid) - 1);
            for (int h = 0; h < 2; h++) {
                for (int i = 0; i < 16; i++) {
                    long n = h * 16 + i;
                    r[i] = n < nb ? _mm512_maskz_loadu_epi16(km, b + (n0 + n) * j->sbn + 2 * q0)
                                  : _mm512_setzero_si512();
                }
                transpose16x16(r);
                uint16_t *dst = (h ? half1 : bp) + q0 * 32;
                for (int i = 0; i < 16; i++) _mm512_storeu_si512(dst + i * 32, r[i]);
            }
        }
        return;
    }
    if (j->sbn == 2) { /* every other value of B's rows (NCHW at stride 2): the even ones of 64 */
        const __m512i even = _mm512_set_epi16(62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32,
                                              30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                            39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
        const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
        long span = 2 * nb - 1; /* values read: never past the last kept one */
        __mmask32 m0 = span >= 32 ? 0xffffffffu : (__mmask32)((1u << span) - 1);
        __mmask32 m1 = span >= 64 ? 0xffffffffu : span <= 32 ? 0 : (__mmask32)((1u << (span - 32)) - 1);
        __m512i r[2];
        for (long q = 0; q < pairs; q++) {
            for (int i = 0; i < 2; i++) {
                long kk = 2 * q + i;
                r[i] = _mm512_setzero_si512();
                if (kk < j->Kd) {
                    const uint16_t *row = b + kk * j->sbk + 2 * n0;
                    r[i] = _mm512_permutex2var_epi16(_mm512_maskz_loadu_epi16(m0, row), even,
                                                     _mm512_maskz_loadu_epi16(m1, row + 32));
                }
            }
            _mm512_storeu_si512(bp + q * 32, _mm512_permutex2var_epi16(r[0], lo, r[1]));
            _mm512_storeu_si512(half1 + q * 32, _mm512_permutex2var_epi16(r[0], hi, r[1]));
        }
        return;
    }
    for (long q = 0; q < pairs; q++) /* any other strides, value by value */
        for (long n = 0; n < 32; n++)
            for (int r = 0; r < 2; r++) {
                long kk = 2 * q + r;
                (n < 16 ? bp : half1)[q * 32 + (n & 15) * 2 + r] =
                    n < nb && kk < j->Kd ? b[kk * j->sbk + (n0 + n) * j->sbn] : 0;
            }
}

/* Rows [m_lo, m_hi) of an A whose columns are contiguous (A(m, kk) at a + kk*sak + m) into ap with
 * rows contiguous, kpad values each, zeros past Kd and past m_hi up to a whole 32 rows: pairs of
 * A's rows interleaved into 32-bit words, 16 columns at a time, then 16 x 16 transposes of those. */
static void amx_pack_a(const Amx *j, const uint16_t *a, long m_lo, long m_hi, long kpad, uint16_t *ap)
{
    __m512i r[16];
    long pairs = kpad / 2, rows = (m_hi - m_lo + 31) / 32 * 32;
    for (long m0 = m_lo; m0 < m_lo + rows; m0 += 16) {
        long live = m_hi - m0;
        __mmask16 mm = live >= 16 ? 0xffff : live <= 0 ? 0 : (__mmask16)((1u << live) - 1);
        for (long q0 = 0; q0 < pairs; q0 += 16) {
            for (int i = 0; i < 16; i++) {
                long k0 = 2 * (q0 + i);
                __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
                if (mm && k0 < j->Kd) lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mm, a + k0 * j->sak + m0));
                if (mm && k0 + 1 < j->Kd)
                    hi = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mm, a + (k0 + 1) * j->sak + m0));
                r[i] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
            }
            transpose16x16(r);
            for (int i = 0; i < 16; i++) _mm512_storeu_si512(ap + (m0 - m_lo + i) * kpad + 2 * q0, r[i]);
        }
    }
}

static inline __m512 amx_act(__m512 v, int act)
{
    if (act) v = _mm512_max_ps(v, _mm512_setzero_ps());
    if (act == 2) v = _mm512_min_ps(v, _mm512_set1_ps(6.0f));
    return v;
}

static inline __m512 bf16_to_ps(__m256i v)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

/* Up to 16 sums (those in mask) to consecutive outputs at element off, in the output's dtype, added
 * to what is there with `add`, the activation applied last. */
static inline void amx_put16(const Amx *j, void *out, long off, __m512 v, __mmask16 m, int add)
{
    if (j->out_f32) {
        float *o = (float *)out + off;
        if (add) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, o));
        _mm512_mask_storeu_ps(o, m, amx_act(v, j->act));
        return;
    }
    uint16_t *o = (uint16_t *)out + off;
    if (add) v = _mm512_add_ps(v, bf16_to_ps(_mm256_maskz_loadu_epi16(m, o)));
    _mm256_mask_storeu_epi16(o, m, (__m256i)_mm512_cvtneps_pbh(amx_act(v, j->act)));
}

static inline __m512 amx_bias16(const Amx *j, long at, __mmask16 m)
{
    return bf16_to_ps(_mm256_maskz_loadu_epi16(m, j->bias + at));
}

static inline __m512 amx_bias1(const Amx *j, long at) { return bf16_to_ps(_mm256_set1_epi16((short)j->bias[at])); }

/* The sums cs (32 x 32, rows m0.., columns n0..) into out, bias and activation applied, rounded to
 * bf16 or kept in float32, added to the output's values with `add`. */
/* 32 sums (two vectors of 16, those in mask) to consecutive outputs at element off: bf16 in one
 * rounding and one store where nothing is added, else as two runs of 16. */
static inline void amx_put32(const Amx *j, void *out, long off, __m512 v0, __m512 v1, __mmask32 m, int add)
{
    if (!j->out_f32 && !add) {
        __m512i h = (__m512i)_mm512_cvtne2ps_pbh(amx_act(v1, j->act), amx_act(v0, j->act));
        _mm512_mask_storeu_epi16((uint16_t *)out + off, m, h);
        return;
    }
    amx_put16(j, out, off, v0, (__mmask16)(m & 0xffff), add);
    if (m >> 16) amx_put16(j, out, off + 16, v1, (__mmask16)(m >> 16), add);
}

/* ct = cs transposed (32 x 32 floats), by four 16 x 16 transposes of 32-bit words. */
static void amx_transpose_sums(const float *cs, float *ct)
{
    __m512i r[16];
    for (int bi = 0; bi < 2; bi++)
        for (int bj = 0; bj < 2; bj++) {
            for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(cs + (bi * 16 + i) * 32 + bj * 16);
            transpose16x16(r);
            for (int i = 0; i < 16; i++) _mm512_storeu_si512(ct + (bj * 16 + i) * 32 + bi * 16, r[i]);
        }
}

/* The sums cs (32 x 32, rows m0.., columns n0..) into out, bias and activation applied, rounded to
 * bf16 or kept in float32, added to the output's values with `add`; ct is scratch for a transpose. */
static void amx_store(const Amx *j, void *out, const float *cs, float *ct, long m0, long mb, long n0, long nb,
                      int add)
{
    const __m512 zero = _mm512_setzero_ps();
    if (j->son == 1) {
        __mmask32 cols = nb >= 32 ? 0xffffffffu : (__mmask32)((1u << nb) - 1);
        __m512 b0 = zero, b1 = zero;
        if (j->bias && !j->bias_rows)
            b0 = amx_bias16(j, n0, (__mmask16)(cols & 0xffff)), b1 = amx_bias16(j, n0 + 16, (__mmask16)(cols >> 16));
        for (long r = 0; r < mb; r++) {
            if (j->bias && j->bias_rows) b0 = b1 = amx_bias1(j, m0 + r);
            amx_put32(j, out, (m0 + r) * j->som + n0, _mm512_add_ps(_mm512_loadu_ps(cs + r * 32), b0),
                      _mm512_add_ps(_mm512_loadu_ps(cs + r * 32 + 16), b1), cols, add);
        }
        return;
    }
    if (j->som == 1) { /* the output transposed: a column of sums is a run of the output */
        __mmask32 rows = mb >= 32 ? 0xffffffffu : (__mmask32)((1u << mb) - 1);
        __m512 b0 = zero, b1 = zero;
        if (j->bias && j->bias_rows)
            b0 = amx_bias16(j, m0, (__mmask16)(rows & 0xffff)), b1 = amx_bias16(j, m0 + 16, (__mmask16)(rows >> 16));
        amx_transpose_sums(cs, ct);
        for (long c = 0; c < nb; c++) {
            if (j->bias && !j->bias_rows) b0 = b1 = amx_bias1(j, n0 + c);
            amx_put32(j, out, (n0 + c) * j->son + m0, _mm512_add_ps(_mm512_loadu_ps(ct + c * 32), b0),
                      _mm512_add_ps(_mm512_loadu_ps(ct + c * 32 + 16), b1), rows, add);
        }
        return;
    }
    for (long r = 0; r < mb; r++) /* any other strides, value by value */
        for (long c = 0; c < nb; c++) {
            __m512 v = _mm512_set1_ps(cs[r * 32 + c]);
            if (j->bias) v = _mm512_add_ps(v, amx_bias1(j, j->bias_rows ? m0 + r : n0 + c));
            amx_put16(j, out, (m0 + r) * j->som + (n0 + c) * j->son, v, 1, add);
        }
}

typedef struct {
    float *cs, *ct;                  /* the sums of a micro-tile, 32 x 32; room for them transposed */
    uint16_t *bp, *apad, *tails;     /* B's block; A's last partial block; A's rows' tails past 32s */
    uint16_t *apack;                 /* A's tile with rows contiguous, where A's columns are (sak != 1) */
} AmxScratch;

/* One image's rows [m_lo, m_hi) of A against B's column blocks [nb_lo, nb_hi), into out. */
static void amx_block(const Amx *j, const AmxScratch *w, long img, long m_lo, long m_hi, long nb_lo, long nb_hi,
                      int add)
{
    long kpad = (j->Kd + 31) / 32 * 32, ksteps = kpad / 32, kfull = j->Kd / 32;
    const uint16_t *a = j->a + img * j->an, *b = j->b + img * j->bn;
    char *out = (char *)j->out + img * j->on * (j->out_f32 ? 4 : 2);
    int packed = j->sak != 1; /* A's tile repacked whole, zero-padded: every block read in place */
    if (packed) amx_pack_a(j, a, m_lo, m_hi, kpad, w->apack);
    long last = packed ? m_hi : m_hi - (m_hi - m_lo) % 32; /* rows from here are a partial block */
    if (last < m_hi) { /* copied once, padded with zeros */
        memset(w->apad, 0, (size_t)32 * kpad * sizeof(uint16_t));
        for (long r = 0; r < m_hi - last; r++) memcpy(w->apad + r * kpad, a + (last + r) * j->lda, (size_t)j->Kd * 2);
    }
    if (!packed && kfull < ksteps) /* whole blocks' row tails past the last full 32 */
        for (long m = m_lo; m < last; m += 32)
            for (long r = 0; r < 32; r++) {
                uint16_t *t = w->tails + ((m - m_lo) / 32 * 32 + r) * 32;
                memset(t, 0, 64);
                memcpy(t, a + (m + r) * j->lda + kfull * 32, (size_t)(j->Kd - kfull * 32) * 2);
            }
    for (long nbk = nb_lo; nbk < nb_hi; nbk++) {
        long n0 = nbk * 32, nb = j->N - n0 < 32 ? j->N - n0 : 32;
        amx_pack_b(j, b, n0, nb, kpad, w->bp);
        const uint16_t *bp = w->bp, *bp1 = bp + kpad / 2 * 32;
        for (long m0 = m_lo; m0 < m_hi; m0 += 32) {
            long mb = m_hi - m0 < 32 ? m_hi - m0 : 32;
            int two_m = mb > 16, two_n = nb > 16;
            const uint16_t *ap = packed ? w->apack + (m0 - m_lo) * kpad : mb == 32 ? a + m0 * j->lda : w->apad;
            long as = mb == 32 && !packed ? j->lda * 2 : kpad * 2;
            const uint16_t *tp = w->tails + (m0 - m_lo) / 32 * 32 * 32;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (long ks = 0; ks < ksteps; ks++) {
                const uint16_t *ak = ap + ks * 32;
                long ast = as;
                if (!packed && mb == 32 && ks >= kfull) ak = tp, ast = 64;
                _tile_loadd(4, ak, ast);
                _tile_loadd(6, bp + ks * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                if (two_n) {
                    _tile_loadd(7, bp1 + ks * 512, 64);
                    _tile_dpbf16ps(1, 4, 7);
                }
                if (two_m) {
                    _tile_loadd(5, ak + 16 * (ast / 2), ast);
                    _tile_dpbf16ps(2, 5, 6);
                    if (two_n) _tile_dpbf16ps(3, 5, 7);
                }
            }
            _tile_stored(0, w->cs, 128);
            _tile_stored(1, w->cs + 16, 128);
            _tile_stored(2, w->cs + 16 * 32, 128);
            _tile_stored(3, w->cs + 16 * 32 + 16, 128);
            amx_store(j, out, w->cs, w->ct, m0, mb, n0, nb, add);
        }
    }
}

/* Work items [i0, i1): an item is one tile of A's rows (tm of them) against one chunk of B's column
 * blocks, of one image, or of all images summed (sum_images: they share the output). */
static void amx_items(const void *ctx, long i0, long i1)
{
    Amx *j = (Amx *)ctx;
    long kpad = (j->Kd + 31) / 32 * 32;
    size_t bp_n = (size_t)kpad * 32, apad_n = (size_t)32 * kpad, tails_n = (size_t)j->tm * 32;
    size_t apack_n = j->sak != 1 ? (size_t)j->tm * kpad : 0;
    float *ws = workspace((bp_n + apad_n + tails_n + apack_n) / 2 + 2 * 32 * 32 + 64);
    if (!ws) {
        j->failed = 1;
        return;
    }
    AmxScratch w = {ws, ws + 32 * 32, (uint16_t *)(ws + 2 * 32 * 32), NULL, NULL, NULL};
    w.apad = w.bp + bp_n;
    w.tails = w.apad + apad_n;
    w.apack = w.tails + tails_n;
    TileConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
    long nblocks = (j->N + 31) / 32, per_image = j->mtiles * j->nchunks;
    for (long it = i0; it < i1; it++) {
        long img = j->sum_images ? 0 : it / per_image, rest = it % per_image;
        long mt = rest / j->nchunks, nc = rest % j->nchunks;
        long m_lo = mt * j->tm, m_hi = m_lo + j->tm < j->M ? m_lo + j->tm : j->M;
        long nb_lo = nc * j->nchunk, nb_hi = nb_lo + j->nchunk < nblocks ? nb_lo + j->nchunk : nblocks;
        if (nb_lo >= nb_hi) continue;
        if (!j->sum_images) {
            amx_block(j, &w, img, m_lo, m_hi, nb_lo, nb_hi, j->accumulate);
            continue;
        }
        for (img = 0; img < j->images; img++)
            amx_block(j, &w, img, m_lo, m_hi, nb_lo, nb_hi, j->accumulate || img > 0);
    }
    _tile_release();
}

#pragma GCC pop_options

static int run_amx(Amx *j, int threads)
{
    threads = threads_for(2.0 * j->images * j->M * j->N * j->Kd, threads);
    long rows = AMX_A_BYTES / 2 / (j->Kd > 0 ? j->Kd : 1) / 32 * 32;
    long mpad = (j->M + 31) / 32 * 32;
    j->tm = rows < 32 ? 32 : rows > mpad ? mpad : rows;
    j->mtiles = (j->M + j->tm - 1) / j->tm;
    /* items enough to share, but few where images are summed: each item repacks A for every image */
    long nblocks = (j->N + 31) / 32, want = (j->sum_images ? 1L : 4L) * threads;
    long have = (j->sum_images ? 1 : j->images) * j->mtiles;
    j->nchunks = have >= want ? 1 : (want + have - 1) / have;
    if (j->nchunks > nblocks) j->nchunks = nblocks;
    j->nchunk = (nblocks + j->nchunks - 1) / j->nchunks;
    j->nchunks = (nblocks + j->nchunk - 1) / j->nchunk;
    j->failed = 0;
    parallel(threads, (j->sum_images ? 1 : j->images) * j->mtiles * j->nchunks, amx_items, j);
    return j->failed ? -1 : 0;
}
