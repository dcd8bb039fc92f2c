/* The pointwise-convolution kernels, written once and compiled once per instruction set.
 *
 * Included by _native.c with these macros defined (and undefined again at the end):
 *   NAME(f)  the function's name for this instruction set (f_avx512, f_avx2, f_base)
 *   VL       floats per vector register (16, 8, 4)
 *   MRMAX    output channels per forward micro-tile
 *   MK, MC   grad_weight micro-tile (output channels x input channels)
 *
 * Every kernel works on float32 planes whose pixels are contiguous (NCHW images, or a group of
 * channels in them); channels and images may have any stride. No kernel allocates more than a
 * packed copy of the weights (K x C floats) and a few kilobytes of stack.
 */

typedef float NAME(vec) __attribute__((vector_size(VL * 4)));
typedef float NAME(uvec) __attribute__((vector_size(VL * 4), aligned(4)));
typedef int NAME(ivec) __attribute__((vector_size(VL * 4)));
#define V NAME(vec)
#define IV NAME(ivec)
#define UV NAME(uvec)
#define NV 2          /* vectors of pixels per forward micro-tile */
#define NB (NV * VL)  /* pixels per forward micro-tile */

/* s - 0 is s, even for -0 and NaN, so the compiler emits a plain broadcast (s + 0 would not be) */
static inline __attribute__((always_inline)) V NAME(splat)(float s) { return s - (V){0}; }
static inline __attribute__((always_inline)) V NAME(load)(const float *p) { return *(const UV *)p; }
static inline __attribute__((always_inline)) void NAME(store)(float *p, V v) { *(UV *)p = v; }

/* ------------------------------------------------------------------------------ forward
 *
 * y[n, k, p] = act(sum_c w[k, c] * x[n, c, p] + bias[k]).
 * The micro-tile below with rows = output channels, columns = pixels, the weights broadcast.
 * Loop nest per (image, pixel tile): input-channel chunk of kc -> block of mr outputs -> NB pixels.
 * The tile of x (kc x nc floats) stays in L2 across the output blocks; the weights are broadcast
 * from where they lie (mr rows x kc, in L1 across the pixels), or, when their rows are a multiple
 * of 4 KiB apart, from a copy of the block in one stream (see run_forward).
 */

/* The one micro-tile every kernel here runs: out[r, :] (+)= row[r, i] * col[i, :] for mr rows and NB
 * columns held in registers while i runs over n steps. Per step: NV vector loads of the column
 * operand (row i at col + i*cs), mr broadcasts of the row operand (element (r, i) at row + r*rs + i*is,
 * read where it lies), mr*NV FMAs. The n steps repeat over nseg segments: the column operand runs
 * on (segment s's rows follow s-1's), the row operand jumps by segstride (grad_weight's images, one
 * after another, while the sums stay in registers). first: start from the bias (one value per row, or
 * a vector per column when bias_rows is 0) or zero, else from y; last: apply the activation before
 * the store. pfr, when not 0: the row operand's rows pfr floats further on (the next micro-tile's
 * pixels in a channels_last input) are asked for ahead, a line of each every 16 steps, since the
 * hardware prefetcher does not follow a dozen short rows read across at once (measured: 1.05-1.17x
 * faster forward on batches of 32 with under 512 channels). */
static inline __attribute__((always_inline)) void NAME(tile_micro)(
    const int mr, const int nv, const float *col, long cs, const float *row, long rs, long is, long n,
    long nseg, long segstride, float *y, long ys, int first, int last, const float *bias, int bias_rows,
    int act, long pfr)
{
    V acc[MRMAX][NV];
#pragma GCC unroll 16
    for (int r = 0; r < mr; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            if (!first) acc[r][v] = NAME(load)(y + r * ys + v * VL);
            else if (!bias) acc[r][v] = NAME(splat)(0.0f);
            else acc[r][v] = bias_rows ? NAME(splat)(bias[r]) : NAME(load)(bias + v * VL);
        }
    }
    for (long s = 0; s < nseg; s++, col += n * cs, row += segstride) {
        for (long i = 0; i < n; i++) {
            V cv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) cv[v] = NAME(load)(col + i * cs + v * VL);
            /* the same rows a few tiles ahead: many short strided streams defeat the hardware prefetcher */
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) __builtin_prefetch(col + i * cs + PFD + v * VL);
            const float *ri = row + i * is;
            if (pfr && !(i & 15)) { /* the next micro-tile's rows, a line each 16 steps */
#pragma GCC unroll 16
                for (int r = 0; r < mr; r++) __builtin_prefetch(ri + r * rs + pfr);
            }
#pragma GCC unroll 16
            for (int r = 0; r < mr; r++) {
                V b = NAME(splat)(ri[r * rs]);
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++) acc[r][v] += b * cv[v];
            }
        }
    }
    if (last && act) {
        V zero = NAME(splat)(0.0f), six = NAME(splat)(6.0f);
#pragma GCC unroll 16
        for (int r = 0; r < mr; r++) {
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) {
                V a = (V)((IV)acc[r][v] & ~(acc[r][v] < zero)); /* as torch.clamp: NaN stays NaN */
                if (act == 2) {
                    IV high = a > six;
                    a = (V)(((IV)a & ~high) | ((IV)six & high));
                }
                acc[r][v] = a;
            }
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < mr; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) NAME(store)(y + r * ys + v * VL, acc[r][v]);
    }
}

#define TILE_CASE(M)                                                                                  \
    case 4 * M + 1:                                                                               \
        NAME(tile_micro)(M, 1, col, cs, row, rs, is, n, nseg, segstride, y, ys, first, last, bias, bias_rows, act, pfr); break; \
    case 4 * M + 2:                                                                               \
        NAME(tile_micro)(M, 2, col, cs, row, rs, is, n, nseg, segstride, y, ys, first, last, bias, bias_rows, act, pfr); break;

/* The micro-tile for mr rows (1..MRMAX) and nv vectors of columns (1 or NV): all compiled out. */
static void NAME(tile)(int mr, int nv, const float *col, long cs, const float *row, long rs, long is, long n,
                       long nseg, long segstride, float *y, long ys, int first, int last, const float *bias,
                       int bias_rows, int act, long pfr)
{
    switch (4 * mr + nv) {
        TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4)
#if MRMAX > 4
        TILE_CASE(5) TILE_CASE(6)
#endif
#if MRMAX > 6
        TILE_CASE(7) TILE_CASE(8) TILE_CASE(9) TILE_CASE(10) TILE_CASE(11) TILE_CASE(12)
#endif
        default: break;
    }
}
#undef TILE_CASE

/* One micro-tile of cols <= NB columns: the full width, or one vector, run in place; anything else
 * computed on the next width up into a buffer (the column operand must be readable that far: packed
 * and padded, or staged), and only the valid columns copied out. */
static inline void NAME(tile_cols)(int mr, int cols, const float *col, long cs, const float *row, long rs,
                                   long is, long n, long nseg, long segstride, float *y, long ys, int first,
                                   int last, const float *bias, int bias_rows, int act, long pfr)
{
    int nv = cols > VL ? NV : 1;
    if (cols == nv * VL) {
        NAME(tile)(mr, nv, col, cs, row, rs, is, n, nseg, segstride, y, ys, first, last, bias, bias_rows, act, pfr);
        return;
    }
    float ybuf[MRMAX * NB] __attribute__((aligned(64)));
    if (!first)
        for (int r = 0; r < mr; r++) copy_floats(ybuf + r * NB, y + r * ys, cols);
    NAME(tile)(mr, nv, col, cs, row, rs, is, n, nseg, segstride, ybuf, NB, first, last, bias, bias_rows, act, pfr);
    for (int r = 0; r < mr; r++) copy_floats(y + r * ys, ybuf + r * NB, cols);
}


/* The weights of output block k0 (mr rows) over channels [c0, c0 + nck): where they lie, or copied
 * into wpack as one stream (element (r, i) at wpack[i*mr + r]) when j->pack says so. */
static inline const float *NAME(weight_block)(const Fwd *j, long k0, long c0, int mr, long nck, float *wpack,
                                               long *rs, long *is)
{
    const float *wb = j->w + k0 * j->wk + c0 * j->wc;
    if (!j->pack) {
        *rs = j->wk, *is = j->wc;
        return wb;
    }
    for (int r = 0; r < mr; r++)
        for (long i = 0; i < nck; i++) wpack[i * mr + r] = wb[r * j->wk + i * j->wc];
    *rs = 1, *is = mr;
    return wpack;
}

/* Images of fewer than 2*NB pixels waste lanes when each is tiled on its own (7 x 7 = 49 pixels
 * take 32 + 16 + 16 lanes). With j->panel set, the ng images of an item are copied, one channel
 * chunk at a time, side by side into a panel (nck rows of j->panel floats, zero-padded to a
 * vector), and the micro-tiles run along the panel; a tile that straddles images, or the panel's
 * last partial one, goes through a buffer and is split on the way out. The copy is 1/K of the
 * work. Returns -1 when it cannot get the panel. */
static int NAME(fwd_panel_items)(const Fwd *j, long i0, long i1)
{
    float ybuf[MRMAX * NB] __attribute__((aligned(64)));
    float wpack[MRMAX * KCMAX] __attribute__((aligned(64)));
    long width = j->panel;
    float *xp = (float *)aligned_alloc(64, (size_t)(j->kc * width * sizeof(float) + 63) / 64 * 64);
    if (!xp) return -1;
    memset(ybuf, 0, sizeof(ybuf)); /* lanes past a partial tile's end are computed, never stored */
    for (long it = i0; it < i1; it++) {
        long n0 = it * j->ng, n1 = n0 + j->ng < j->N ? n0 + j->ng : j->N, cols = (n1 - n0) * j->P;
        for (long c0 = 0; c0 < j->C; c0 += j->kc) {
            long nck = j->C - c0 < j->kc ? j->C - c0 : j->kc;
            int first = c0 == 0, last = c0 + nck >= j->C;
            for (long c = 0; c < nck; c++) {
                float *row = xp + c * width;
                for (long n = n0; n < n1; n++)
                    memcpy(row + (n - n0) * j->P, j->x + n * j->xn + (c0 + c) * j->xc, j->P * sizeof(float));
                memset(row + cols, 0, (width - cols) * sizeof(float));
            }
            for (long k0 = 0; k0 < j->K; k0 += MRMAX) {
                int mr = (int)(j->K - k0 < MRMAX ? j->K - k0 : MRMAX);
                long wrs, wis;
                const float *wb = NAME(weight_block)(j, k0, c0, mr, nck, wpack, &wrs, &wis);
                const float *b = j->bias ? j->bias + k0 : NULL;
                for (long p = 0; p < cols; p += NB) {
                    long w = cols - p < NB ? cols - p : NB;
                    int nv = w > VL ? NV : 1;
                    long img = p / j->P, q = p - img * j->P; /* the tile's first image and pixel */
                    float *y0 = j->y + (n0 + img) * j->yn + k0 * j->yc + q;
                    if (w == nv * VL && q + w <= j->P) { /* inside one image: in place */
                        NAME(tile)(mr, nv, xp + p, width, wb, wrs, wis, nck, 1, 0, y0, j->yc, first, last, b, 1, j->act, 0);
                        continue;
                    }
                    /* lanes [s, e) of the tile belong to image img at pixel q + ... : split */
                    if (!first)
                        for (long s = 0, n = img, qq = q; s < w; n++, qq = 0) {
                            long e = s + (j->P - qq) < w ? s + (j->P - qq) : w;
                            const float *src = j->y + (n0 + n) * j->yn + k0 * j->yc + qq;
                            for (int r = 0; r < mr; r++)
                                copy_floats(ybuf + r * NB + s, src + r * j->yc, e - s);
                            s = e;
                        }
                    NAME(tile)(mr, nv, xp + p, width, wb, wrs, wis, nck, 1, 0, ybuf, NB, first, last, b, 1, j->act, 0);
                    for (long s = 0, n = img, qq = q; s < w; n++, qq = 0) {
                        long e = s + (j->P - qq) < w ? s + (j->P - qq) : w;
                        float *dst = j->y + (n0 + n) * j->yn + k0 * j->yc + qq;
                        for (int r = 0; r < mr; r++)
                            copy_floats(dst + r * j->yc, ybuf + r * NB + s, e - s);
                        s = e;
                    }
                }
            }
        }
    }
    free(xp);
    return 0;
}

/* Work items are (group of ng images, pixel tile) pairs; this runs items [i0, i1). Small images go
 * by in groups so that a block of weights in L1 meets many pixels before the next block is read
 * (ResNet-50's 2048 x 7 x 7 layers read 4 MB of weights per image otherwise). Each tile runs as
 * micro-tiles of NB pixels, then one of VL if that many are left, then the last few (fewer than VL)
 * as a VL-wide micro-tile ending at the tile's end: it overlaps pixels already done, computes into a
 * buffer and keeps only its new lanes (the overlapped lanes, read from y mid-update, are dropped).
 * Images smaller than VL pixels are instead copied, one image and one channel chunk at a time, into
 * a zero-padded buffer of kc x VL floats. Returns -1 when it cannot get that buffer. */
static int NAME(fwd_items)(const Fwd *j, long i0, long i1)
{
    if (j->panel) return NAME(fwd_panel_items)(j, i0, i1);
    float ybuf[MRMAX * NB] __attribute__((aligned(64)));
    float wpack[MRMAX * KCMAX] __attribute__((aligned(64)));
    float *xbuf = NULL;
    if (j->P < VL) {
        xbuf = (float *)aligned_alloc(64, (size_t)(j->kc * VL * sizeof(float) + 63) / 64 * 64);
        if (!xbuf) return -1;
    }
    long tiles = (j->P + j->nc - 1) / j->nc;
    for (long item = i0; item < i1; item++) {
        long klo = 0, khi = j->K, it = item;
        if (j->kslice) { /* a slice of the output channels over every pixel (one tile) */
            klo = item * j->kslice, khi = klo + j->kslice < j->K ? klo + j->kslice : j->K, it = 0;
        }
        long n0 = it / tiles * j->ng, n1 = n0 + j->ng < j->N ? n0 + j->ng : j->N;
        long p0 = (it % tiles) * j->nc, p1 = p0 + j->nc < j->P ? p0 + j->nc : j->P;
        long full = p0 + (p1 - p0) / NB * NB, half = p1 - full >= VL ? VL : 0, tail = full + half;
        long rem = p1 - tail;
        for (long c0 = 0; c0 < j->C; c0 += j->kc) {
            long nck = j->C - c0 < j->kc ? j->C - c0 : j->kc;
            int first = c0 == 0, last = c0 + nck >= j->C;
            for (long k0 = klo; k0 < khi; k0 += MRMAX) {
                int mr = (int)(khi - k0 < MRMAX ? khi - k0 : MRMAX);
                long wrs, wis;
                const float *wb = NAME(weight_block)(j, k0, c0, mr, nck, wpack, &wrs, &wis);
                const float *b = j->bias ? j->bias + k0 : NULL;
                for (long n = n0; n < n1; n++) {
                    const float *xi = j->x + n * j->xn + c0 * j->xc;
                    float *yi = j->y + n * j->yn + k0 * j->yc;
                    for (long p = p0; p < full; p += NB) {
                        if (j->pfy && p + 2 * NB <= full) /* the next tile's output lines, for writing */
                            for (int r = 0; r < mr; r++) {
                                __builtin_prefetch(yi + r * j->yc + p + NB, 1);
                                __builtin_prefetch(yi + r * j->yc + p + NB + VL, 1);
                            }
                        NAME(tile)(mr, NV, xi + p, j->xc, wb, wrs, wis, nck, 1, 0, yi + p, j->yc, first, last, b, 1,
                                   j->act, 0);
                    }
                    if (half)
                        NAME(tile)(mr, 1, xi + full, j->xc, wb, wrs, wis, nck, 1, 0, yi + full, j->yc, first, last, b,
                                   1, j->act, 0);
                    if (!rem) continue;
                    const float *xs;
                    long xstride, lane0;
                    if (p1 >= VL) { /* the VL pixels ending at p1, read in place; ours are the last rem */
                        xs = xi + p1 - VL, xstride = j->xc, lane0 = VL - rem;
                    } else { /* an image smaller than one vector: staged (re-staged per output block) */
                        for (long c = 0; c < nck; c++) {
                            copy_floats(xbuf + c * VL, xi + c * j->xc, rem);
                            memset(xbuf + c * VL + rem, 0, (VL - rem) * sizeof(float));
                        }
                        xs = xbuf, xstride = VL, lane0 = 0;
                    }
                    if (!first)
                        for (int r = 0; r < mr; r++) {
                            memset(ybuf + r * NB, 0, VL * sizeof(float));
                            copy_floats(ybuf + r * NB + lane0, yi + r * j->yc + tail, rem);
                        }
                    NAME(tile)(mr, 1, xs, xstride, wb, wrs, wis, nck, 1, 0, ybuf, NB, first, last, b, 1, j->act, 0);
                    for (int r = 0; r < mr; r++)
                        copy_floats(yi + r * j->yc + tail, ybuf + r * NB + lane0, rem);
                }
            }
        }
    }
    free(xbuf);
    return 0;
}

/* ------------------------------------------------------------------------- grad_weight
 *
 * out[k, c] (+)= sum over n, p of g[n, k, p] * x[n, c, p]: dot products along the pixels.
 * A micro-tile is mk x mc sums, each a vector of partial sums over VL pixels; per VL pixels it
 * loads mk + mc vectors and does mk*mc FMAs, then folds its lanes once per pixel tile.
 */

static inline __attribute__((always_inline)) void NAME(gw_micro)(
    const int mk, const int mc, const float *g, long gs, const float *x, long xs, long np, float *out,
    long ok)
{
    V acc[MK][MC];
#pragma GCC unroll 8
    for (int a = 0; a < mk; a++)
#pragma GCC unroll 8
        for (int b = 0; b < mc; b++) acc[a][b] = NAME(splat)(0.0f);
    long p = 0;
    for (; p + VL <= np; p += VL) {
        V gv[MK], xv[MC];
#pragma GCC unroll 8
        for (int a = 0; a < mk; a++) gv[a] = NAME(load)(g + a * gs + p);
#pragma GCC unroll 8
        for (int b = 0; b < mc; b++) xv[b] = NAME(load)(x + b * xs + p);
#pragma GCC unroll 8
        for (int a = 0; a < mk; a++)
#pragma GCC unroll 8
            for (int b = 0; b < mc; b++) acc[a][b] += gv[a] * xv[b];
    }
#pragma GCC unroll 8
    for (int a = 0; a < mk; a++) {
#pragma GCC unroll 8
        for (int b = 0; b < mc; b++) {
            float s = 0.0f;
            for (int l = 0; l < VL; l++) s += acc[a][b][l];
            for (long q = p; q < np; q++) s += g[a * gs + q] * x[b * xs + q];
            out[a * ok + b] += s;
        }
    }
}

#define GW_CASE(A, B) \
    case (A) * 16 + (B): NAME(gw_micro)(A, B, g, gs, x, xs, np, out, ok); break;
#define GW_ROW(A) GW_CASE(A, 1) GW_CASE(A, 2) GW_CASE(A, 3) GW_CASE(A, 4) GW_CASE_MORE(A)
#if MC > 4
#define GW_CASE_MORE(A) GW_CASE(A, 5) GW_CASE(A, 6)
#else
#define GW_CASE_MORE(A)
#endif

static void NAME(gw_dispatch)(int mk, int mc, const float *g, long gs, const float *x, long xs, long np,
                              float *out, long ok)
{
    switch (mk * 16 + mc) {
        GW_ROW(1) GW_ROW(2) GW_ROW(3)
#if MK > 3
        GW_ROW(4)
#endif
        default: break;
    }
}
#undef GW_CASE
#undef GW_ROW
#undef GW_CASE_MORE

/* This thread's rectangle of out: rows [k0, k1) and columns [c0, c1), over every image and pixel. */
static void NAME(gw_rect)(const Gw *j, long k0, long k1, long c0, long c1)
{
    for (long k = k0; k < k1; k++)
        for (long c = c0; c < c1; c++)
            if (!j->accumulate) j->out[k * j->ok + c] = 0.0f;
    for (long n = 0; n < j->N; n++) {
        const float *gi = j->g + n * j->gn, *xi = j->x + n * j->xn;
        for (long p0 = 0; p0 < j->P; p0 += j->nc) {
            long np = j->P - p0 < j->nc ? j->P - p0 : j->nc;
            for (long k = k0; k < k1; k += MK) {
                int mk = (int)(k1 - k < MK ? k1 - k : MK);
                for (long c = c0; c < c1; c += MC) {
                    int mc = (int)(c1 - c < MC ? c1 - c : MC);
                    NAME(gw_dispatch)(mk, mc, gi + k * j->gc + p0, j->gc, xi + c * j->xc + p0, j->xc, np,
                                      j->out + k * j->ok + c, j->ok);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------- channels_last
 *
 * With the channels innermost, a pixel's outputs are contiguous: the same micro-tile with rows =
 * pixels (forward, grad_input) or output channels (grad_weight) and NB columns of channels. The
 * column operand must have NB readable columns: packed, or staged at the edge.
 */

/* A VL x VL transpose in registers: stage d swaps the off-diagonal d x d blocks of rows r and
 * r + d (bit d of the row index trades places with bit d of the lane index); after every stage
 * r[u][t] is what r[t][u] was. Lane j of the two results of a stage, from x = r[a] and y = r[a + d]: */
#define TLO(j, d) (((j) & (d)) ? VL + (j) - (d) : (j))
#define THI(j, d) (((j) & (d)) ? VL + (j) : (j) + (d))
#if VL == 16
#define TMASK(F, d) {F(0, d), F(1, d), F(2, d), F(3, d), F(4, d), F(5, d), F(6, d), F(7, d), \
                     F(8, d), F(9, d), F(10, d), F(11, d), F(12, d), F(13, d), F(14, d), F(15, d)}
#elif VL == 8
#define TMASK(F, d) {F(0, d), F(1, d), F(2, d), F(3, d), F(4, d), F(5, d), F(6, d), F(7, d)}
#else
#define TMASK(F, d) {F(0, d), F(1, d), F(2, d), F(3, d)}
#endif
#define TSTAGE(d)                                                                                      \
    if ((d) < VL) {                                                                                    \
        const IV lo = TMASK(TLO, d), hi = TMASK(THI, d);                                               \
        for (int a = 0; a < VL; a++)                                                                   \
            if (!(a & (d))) {                                                                          \
                V x = r[a], y = r[a + (d)];                                                            \
                r[a] = __builtin_shuffle(x, y, lo);                                                    \
                r[a + (d)] = __builtin_shuffle(x, y, hi);                                              \
            }                                                                                          \
    }

static inline __attribute__((always_inline)) void NAME(transpose)(V *r)
{
    TSTAGE(8) TSTAGE(4) TSTAGE(2) TSTAGE(1)
}
#undef TSTAGE
#undef TMASK
#undef THI
#undef TLO

/* Packs block b (NB columns, zero-padded) of the column operand of a channels_last product (R x
 * COLS, element (i, j) at w + i*si + j*sj): dst[i*NB + l] = w(i, b*NB + l); and the bias likewise
 * (bdst[l], when there is a bias). */
static void NAME(cl_pack_block)(const Cl *j, long b, float *dst, float *bdst)
{
    if (j->si == 1) { /* W^T of a row-major W: VL rows of W (VL columns of the block) at a time, read
                       * along them VL floats at a time and transposed in registers */
        long full = j->C / VL * VL;
        for (long l0 = 0; l0 < NB; l0 += VL) {
            const float *rows[VL];
            for (int t = 0; t < VL; t++)
                rows[t] = b * NB + l0 + t < j->K ? j->w + (b * NB + l0 + t) * j->sj : NULL;
            for (long i0 = 0; i0 < full; i0 += VL) {
                V r[VL];
                for (int t = 0; t < VL; t++) r[t] = rows[t] ? NAME(load)(rows[t] + i0) : NAME(splat)(0.0f);
                NAME(transpose)(r);
                for (int u = 0; u < VL; u++) NAME(store)(dst + (i0 + u) * NB + l0, r[u]);
            }
            for (long i = full; i < j->C; i++)
                for (int t = 0; t < VL; t++) dst[i * NB + l0 + t] = rows[t] ? rows[t][i] : 0.0f;
        }
    } else if (j->sj == 1 && (b + 1) * NB <= j->K) { /* whole rows of NB floats: vector copies */
        for (long i = 0; i < j->C; i++)
            for (int v = 0; v < NV; v++)
                NAME(store)(dst + i * NB + v * VL, NAME(load)(j->w + i * j->si + b * NB + v * VL));
    } else {
        for (long i = 0; i < j->C; i++)
            for (long l = 0; l < NB; l++) {
                long col = b * NB + l;
                dst[i * NB + l] = col < j->K ? j->w[i * j->si + col * j->sj] : 0.0f;
            }
    }
    if (j->bias && bdst)
        for (long l = 0; l < NB; l++) bdst[l] = b * NB + l < j->K ? j->bias[b * NB + l] : 0.0f;
}

/* The whole column operand in blocks of NB columns: block b at wp + b*C*NB, its bias at bp + b*NB. */
static void NAME(cl_pack)(const Cl *j, float *wp, float *bp)
{
    long blocks = (j->K + NB - 1) / NB;
    for (long b = 0; b < blocks; b++) NAME(cl_pack_block)(j, b, wp + b * j->C * NB, bp ? bp + b * NB : NULL);
}

/* One micro-tile: pixels [p, p + mr) by the columns of block b (cols of them; wcol its packed rows,
 * bb its bias). Stored in place when the output's channels are contiguous; else (an NCHW output,
 * channel after channel) computed into a buffer and written out channel by channel. */
static inline void NAME(cl_tile)(const Cl *j, int mr, int cols, const float *wcol, long p, long b,
                                 const float *bb, long pfr)
{
    if (j->yk == 1) {
        if (j->pfy) { /* the next micro-tile's output lines, asked for ahead, for writing */
            float *yn = j->y + (p + mr) * j->yp + b * NB;
            long q = j->P - p - mr < MRMAX ? j->P - p - mr : MRMAX;
            for (long r = 0; r < q; r++)
                for (int l = 0; l < cols; l += 16) __builtin_prefetch(yn + r * j->yp + l, 1);
        }
        NAME(tile_cols)(mr, cols, wcol, NB, cl_x_at(j, p), j->xw, j->xc, j->C, 1, 0, j->y + p * j->yp + b * NB,
                        j->yp, 1, 1, bb, 0, j->act, pfr);
        return;
    }
    float ybuf[MRMAX * NB] __attribute__((aligned(64)));
    NAME(tile)(mr, NV, wcol, NB, cl_x_at(j, p), j->xw, j->xc, j->C, 1, 0, ybuf, NB, 1, 1, bb, 0, j->act, 0);
    long per_image = j->wo * j->ho, image = p / per_image; /* micro-tiles never cross a row, nor an image */
    float *y = j->y + image * j->yn + (p - image * per_image) * j->yp + b * NB * j->yk;
    for (int l = 0; l < cols; l++)
        for (int r = 0; r < mr; r++) y[r * j->yp + l * j->yk] = ybuf[r * NB + l];
}

/* The end of the next micro-tile from pixel p up to end: at most MRMAX rows, the rest shared out
 * evenly (49 pixels go 10, 10, 10, 10, 9, not 12, 12, 12, 12 and a lone pixel, whose micro-tile of
 * one row waits on its loads). */
static inline long NAME(cl_next)(long p, long end)
{
    long left = end - p, tiles = (left + MRMAX - 1) / MRMAX;
    return p + (left + tiles - 1) / tiles;
}

/* y[p, :] = act(x[p, :] @ Wt + bias), C in, K out. Items are tiles of j->tile pixels over every
 * column block of the packed operand; or, with j->by_columns, column blocks over every pixel, each
 * block packed into this thread's workspace first (small images with many outputs: every thread
 * reading all of W^T once per pixel tile made them memory-bound). Returns -1 when it cannot get
 * the workspace. */
static int NAME(cl_fwd_items)(const Cl *j, long i0, long i1)
{
    if (j->by_columns) {
        float *ws = workspace((size_t)j->C * NB);
        float bb[NB] __attribute__((aligned(64)));
        if (!ws) return -1;
        for (long b = i0; b < i1; b++) {
            int cols = (int)(j->K - b * NB < NB ? j->K - b * NB : NB);
            NAME(cl_pack_block)(j, b, ws, bb);
            for (long p = 0, next; p < j->P; p = next) {
                next = NAME(cl_next)(p, (p / j->wo + 1) * j->wo);
                NAME(cl_tile)(j, (int)(next - p), cols, ws, p, b, j->bias ? bb : NULL, 0);
            }
        }
        return 0;
    }
    long blocks = (j->K + NB - 1) / NB;
    for (long it = i0; it < i1; it++) {
        long p0 = it * j->tile, p1 = p0 + j->tile < j->P ? p0 + j->tile : j->P;
        for (long b = 0; b < blocks; b++) {
            int cols = (int)(j->K - b * NB < NB ? j->K - b * NB : NB);
            const float *wb = j->wp + b * j->C * NB, *bb = j->bp ? j->bp + b * NB : NULL;
            for (long p = p0, next; p < p1; p = next) {
                long row_end = (p / j->wo + 1) * j->wo;
                next = NAME(cl_next)(p, row_end < p1 ? row_end : p1);
                long pfr = 0, q = next < p1 ? next : p1 < j->P ? p1 : -1; /* the next micro-tile: this
                                                                             * item's, or the next item's */
                if (j->pfx && j->xc == 1 && q >= 0) pfr = cl_x_at(j, q) - cl_x_at(j, p);
                NAME(cl_tile)(j, (int)(next - p), cols, wb, p, b, bb, pfr);
            }
        }
    }
    return 0;
}

/* out[k, c] (+)= sum over pixels p of g[p, k] * x[p, c], for the blocks [b0, b1) of mr x NB outputs
 * (numbered row block by row block). The pixels go by in tiles; each tile's block is read and
 * written back once. xbuf stages the last columns when C is not a multiple of NB. */
static void NAME(cl_gw_blocks)(const ClGw *j, long b0, long b1)
{
    long cblocks = (j->C + NB - 1) / NB;
    float xbuf[CL_GW_TILE * NB] __attribute__((aligned(64)));
    for (long p0 = 0; p0 < j->P; p0 += j->tile) {
        long np = j->P - p0 < j->tile ? j->P - p0 : j->tile;
        int first = p0 == 0 && !j->accumulate;
        long staged = -1;
        for (long blk = b0; blk < b1; blk++) {
            long kb = blk / cblocks, cb = blk % cblocks, k0 = kb * MRMAX, c0 = cb * NB;
            int mr = (int)(j->K - k0 < MRMAX ? j->K - k0 : MRMAX);
            int cols = (int)(j->C - c0 < NB ? j->C - c0 : NB);
            const float *col = j->x + p0 * j->xp + c0;
            long cs = j->xp;
            if (cols < NB) { /* the last columns: copied into a zero-padded buffer once per tile */
                if (staged != p0) {
                    for (long q = 0; q < np; q++) {
                        copy_floats(xbuf + q * NB, col + q * j->xp, cols);
                        memset(xbuf + q * NB + cols, 0, (NB - cols) * sizeof(float));
                    }
                    staged = p0;
                }
                col = xbuf;
                cs = NB;
            }
            NAME(tile_cols)(mr, cols, col, cs, j->g + p0 * j->gp + k0, 1, j->gp, np, 1, 0, j->out + k0 * j->ok + c0,
                          j->ok, first, 0, NULL, 0, 0, 0);
        }
    }
}

/* grad_weight for NCHW as outer products: a tile of x (C x np pixels) is transposed once into
 * pixels x channels, then out[k, c-block] += g[n, k, p] * xT[p, c-block] runs on the channels_last
 * micro-tile (rows: output channels, broadcast from g's rows; columns: NB input channels). No lane
 * folding; the transposition costs about 16/K of the FMAs. Small images go several to a tile, one
 * after another, and each micro-tile's sums stay in registers across them (one image at a time, a
 * 7 x 7 image's 49 steps paid a load and a store of the block of out for each). This thread's share:
 * rows [k0, k1), columns [c0, c1) of out. Returns -1 when it cannot get its scratch. */
static int NAME(gw_outer)(const Gw *j, long k0, long k1, long c0, long c1)
{
    long width = c1 - c0, cpad = (width + NB - 1) / NB * NB;
    long tile = GW_OUTER_BYTES / (long)sizeof(float) / cpad;
    tile = tile < 16 ? 16 : tile > 1024 ? 1024 : tile;
    /* images per tile: as many whole images as fit in a larger tile (every image fewer per tile
     * means a pass more over this thread's block of out), else one, in pieces */
    long many = GW_OUTER_IMAGES_BYTES / (long)sizeof(float) / cpad;
    long ng = j->P > 0 && 2 * j->P <= many ? many / j->P : 1;
    if (ng > j->N) ng = j->N > 0 ? j->N : 1;
    long step = ng > 1 ? j->P : tile; /* pixels of each image per tile */
    float *xt = (float *)aligned_alloc(64, (size_t)((ng > 1 ? ng * j->P : tile) * cpad * sizeof(float) + 64)
                                               / 64 * 64);
    if (!xt) return -1;
    for (long n0 = 0; n0 < j->N; n0 += ng) {
        long nseg = j->N - n0 < ng ? j->N - n0 : ng;
        const float *gi = j->g + n0 * j->gn;
        for (long p0 = 0; p0 < j->P; p0 += step) {
            long np = j->P - p0 < step ? j->P - p0 : step;
            int first = n0 == 0 && p0 == 0 && !j->accumulate;
            for (long s = 0; s < nseg; s++) {
                const float *xi = j->x + (n0 + s) * j->xn + c0 * j->xc;
                float *xs = xt + s * np * cpad; /* this image's rows of the tile */
                for (long q = 0; q < np; q++) /* transpose, zero-padding the columns past c1 */
                    for (long c = width; c < cpad; c++) xs[q * cpad + c] = 0.0f;
                /* in 16 x 16 blocks: the 16 rows written stay in L1 while 16 channels fill them (one
                 * channel at a time wrote a line per pixel, 1 KiB or more apart) */
                for (long cb = 0; cb < width; cb += 16)
                    for (long qb = 0; qb < np; qb += 16) {
                        long ce = cb + 16 < width ? cb + 16 : width, qe = qb + 16 < np ? qb + 16 : np;
                        if (ce - cb == 16 && qe - qb == 16) { /* in registers, VL x VL at a time */
                            for (long cv = cb; cv < ce; cv += VL)
                                for (long qv = qb; qv < qe; qv += VL) {
                                    V r[VL];
                                    for (int t = 0; t < VL; t++)
                                        r[t] = NAME(load)(xi + (cv + t) * j->xc + p0 + qv);
                                    NAME(transpose)(r);
                                    for (int u = 0; u < VL; u++) NAME(store)(xs + (qv + u) * cpad + cv, r[u]);
                                }
                            continue;
                        }
                        for (long c = cb; c < ce; c++) {
                            const float *src = xi + c * j->xc + p0;
                            for (long q = qb; q < qe; q++) xs[q * cpad + c] = src[q];
                        }
                    }
            }
            for (long k = k0; k < k1; k += MRMAX) {
                int mr = (int)(k1 - k < MRMAX ? k1 - k : MRMAX);
                for (long cb = 0; cb < width; cb += NB) {
                    int cols = (int)(width - cb < NB ? width - cb : NB);
                    NAME(tile_cols)(mr, cols, xt + cb, cpad, gi + k * j->gc + p0, j->gc, 1, np, nseg, j->gn,
                                    j->out + k * j->ok + c0 + cb, j->ok, first, 0, NULL, 0, 0, 0);
                }
            }
        }
    }
    free(xt);
    return 0;
}

#undef V
#undef UV
#undef IV
#undef NV
#undef NB

/* this instruction set's parameters end here: the next inclusion defines its own */
#undef NAME
#undef VL
#undef MRMAX
#undef MK
#undef MC
