/* onebyone._native: direct float32 kernels for the pointwise convolution on the CPU.
 *
 * A 1x1 convolution over NCHW data is, per image, W (K x C) @ X (C x pixels). BLAS libraries run
 * that product well when C and K are large, but on the shapes where the channels are few (the
 * seed's 50 -> 20 maps over 600 x 600 pixels, MobileNet's first pointwise layer) they spend their
 * time packing and re-reading the long pixel rows. These kernels read each input pixel once from
 * memory, keep a tile of outputs in registers while the channels stream past, and write each
 * output once, with the bias and the activation applied before the store.
 *
 * The Python side passes raw data pointers and element strides of tensors it has checked (float32,
 * on the CPU, pixels contiguous); the kernels release the GIL and split the work over threads.
 * Each kernel is compiled for AVX-512, for AVX2+FMA and for the baseline instruction set, and the
 * best one the CPU supports is picked once at import.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The tunable sizes (those under #ifndef) can be set at build time with -DNAME=VALUE:
 * benchmarks/native_builds.py compares such builds side by side. */
#ifndef KCMAX
#define KCMAX 256       /* input channels per chunk of the forward loop nest */
#endif
#ifndef TILE_BYTES
#define TILE_BYTES 196608L /* a pixel tile of the input (chunk x tile floats) fits in L2 */
#endif
#ifndef WIDE_TILE_BYTES
#define WIDE_TILE_BYTES 294912L /* ... in a forward over 1024 channels or more of small images */
#endif
#define MAX_THREADS 256
#ifndef GW_OUTER_BYTES
#define GW_OUTER_BYTES 262144L /* grad_weight's transposed tile of x (128 KiB: slower on 14 x 14 images) */
#endif
#ifndef GW_OUTER_IMAGES_BYTES
#define GW_OUTER_IMAGES_BYTES 524288L /* ... when it holds several small images (measured: 128-768 KiB) */
#endif
#define CL_GW_TILE 512 /* most pixels per tile of the channels_last grad_weight */
#ifndef CL_GW_MIN_TILE
#define CL_GW_MIN_TILE 128 /* ... and the fewest (measured: 64-192 alike, 16 slower on wide layers) */
#endif
#define GW_KEPT_FLOATS (4L << 20) /* grad_weight's transposed result kept between calls up to 16 MiB */
#define CL_WORKSPACE_MAX_C 2048 /* channels_last forward by column blocks: a block is C x 32 floats */
#define CL_COLUMNS_MAX_INPUT 131072.0 /* ... and chosen for inputs up to this many floats (L2) */
#define GW_DOT_MAX_CHANNELS 100 /* grad_weight (NCHW) as dot products up to K + C channels (measured) */
#ifndef PFD
#define PFD 512          /* floats ahead that the forward kernel prefetches, per input row (measured) */
#endif
#ifndef FLOPS_PER_THREAD
#define FLOPS_PER_THREAD 1000000.0 /* below this a thread costs more than it saves (measured: 4e6 left the
                                      narrow layers of single images on one thread, 1.4-1.8x slower) */
#endif
#ifndef PACK_MIN_PIXELS
#define PACK_MIN_PIXELS 96 /* weight blocks 4 KiB apart are copied for items of at least this many pixels */
#endif
#ifndef KSPLIT
#define KSPLIT 1 /* the forward may share out output channels when all pixels are one tile (0: never) */
#endif
#ifndef FWD_PREFETCH_Y
#define FWD_PREFETCH_Y 1 /* NCHW forward / grad_input: fetch the next tile's output lines for writing */
#endif
#ifndef CL_PREFETCH_Y
#define CL_PREFETCH_Y 1 /* channels_last: fetch the next micro-tile's output lines for writing (0: not) */
#endif
#ifndef CL_GW_SPLIT_MAX_OUT
#define CL_GW_SPLIT_MAX_OUT 65536.0 /* channels_last grad_weight splits the pixels among threads up to this
                                       many outputs (K x C), else the blocks of outputs (measured: all
                                       layers 0.95-1.08x the time, a mixed lot) */
#endif
#ifndef CL_PREFETCH_X
#define CL_PREFETCH_X 1 /* channels_last: fetch the next micro-tile's input rows ahead (0: not) */
#endif
#ifndef PREFETCH_X_MIN_BYTES
#define PREFETCH_X_MIN_BYTES 1048576.0 /* ... for inputs over 1 MiB (smaller ones stay in L2: up to 5% slower) */
#endif
#ifndef PREFETCH_Y_MIN_BYTES
#define PREFETCH_Y_MIN_BYTES 4194304.0 /* ... on outputs over 4 MiB (smaller ones stay in cache) */
#endif
#define PANEL_SHARE 0.08 /* the forward's panels of small images, all threads', at most this share of x */

typedef struct {
    const float *x; long xn, xc;  /* input: image stride, channel stride (pixels contiguous) */
    float *y; long yn, yc;        /* output likewise */
    const float *w; long wk, wc;  /* w[k, c] at w + k*wk + c*wc */
    const float *bias;            /* NULL or K values */
    long N, C, K, P;
    int act;                      /* 0 none, 1 relu, 2 relu6 */
    long kc, nc, ng;              /* input channels per chunk, pixels per tile, images per group */
    int pack;                     /* copy each block of weights before use (else read in place) */
    long panel;                   /* > 0: small images side by side in a panel this many floats wide */
    long kslice;                  /* > 0: items are slices of this many output channels (all pixels) */
    double base;                  /* floats of the op's input, which bounds the panels' memory */
    int failed;                   /* a thread could not get its staging buffer */
    int pfy;                      /* ask for the next tile's output lines ahead (a large output) */
} Fwd;

typedef struct {
    const float *g; long gn, gc;  /* grad of the output: image stride, channel stride */
    const float *x; long xn, xc;  /* input */
    float *out; long ok;          /* K x C result, row stride ok */
    long N, K, C, P;
    int accumulate;               /* add to out instead of overwriting it */
    long nc;                      /* pixels per tile (dot products) */
    int along_k;                  /* threads split the rows (else the columns) */
    int outer;                    /* outer products on a transposed tile (else dot products) */
} Gw;

typedef struct {
    const float *x; long xp;      /* channels_last input: pixel stride (channels contiguous) */
    float *y; long yp;            /* output likewise */
    const float *w; long si, sj;  /* the column operand: element (i, j) at w + i*si + j*sj, C x K */
    const float *bias;            /* NULL or K values */
    long P, C, K;                 /* pixels, reduction length, output columns */
    int act;
    const float *wp, *bp;         /* packed column operand and bias */
    long tile;                    /* pixels per work item */
    int by_columns;               /* items are column blocks, packed one at a time (else pixel tiles) */
    int failed;                   /* a thread could not get its workspace */
    int pfy;                      /* ask for the next micro-tile's output lines ahead (a large output) */
    int pfx;                      /* ask for the next micro-tile's input rows ahead (a large input) */
    long wo, ho, xw, xh, xn;      /* the pixels as rows of wo, ho rows per image: output pixel p reads
                                   * x + (p/wo/ho)*xn + (p/wo%ho)*xh + (p%wo)*xw (a strided input) */
    long xc, yk;                  /* channel strides of x and y: 1 (channels_last), or the pixels of one
                                   * NCHW image (its product turned around: y^T = x^T W^T) */
    long yn;                      /* with yk != 1: y's image stride (an image is wo x ho pixels) */
} Cl;

/* The input row of output pixel p of a channels_last product; micro-tiles never cross a row. */
static inline const float *cl_x_at(const Cl *j, long p)
{
    long r = p / j->wo;
    return j->x + (r / j->ho) * j->xn + (r % j->ho) * j->xh + (p - r * j->wo) * j->xw;
}

typedef struct {
    const float *g; long gp;      /* channels_last grad of the output: pixel stride */
    const float *x; long xp;      /* channels_last input */
    float *out; long ok;          /* K x C result, row stride ok */
    long P, K, C;
    int accumulate;
    long tile;                    /* pixels per tile (at most CL_GW_TILE) */
} ClGw;

/* n floats from src to dst for the short copies at a tile's edge (a row of up to 32 floats): in
 * fixed-size pieces the compiler turns into moves, where memcpy(n) is a library call per row (no
 * difference measured on the seed's 4-output layer: kept because it costs nothing). */
static inline __attribute__((always_inline)) void copy_floats(float *dst, const float *src, long n)
{
    for (; n >= 8; n -= 8, dst += 8, src += 8) memcpy(dst, src, 8 * sizeof(float));
    if (n & 4) { memcpy(dst, src, 4 * sizeof(float)); dst += 4; src += 4; }
    if (n & 2) { memcpy(dst, src, 2 * sizeof(float)); dst += 2; src += 2; }
    if (n & 1) *dst = *src;
}

/* ---------------------------------------------------------------------------- threads */

typedef void (*RangeFn)(const void *ctx, long i0, long i1);
typedef struct { RangeFn fn; const void *ctx; long i0, i1; } Part;

static void *part_main(void *arg)
{
    Part *p = (Part *)arg;
    p->fn(p->ctx, p->i0, p->i1);
    return NULL;
}

/* PyTorch's own OpenMP runtime, when it has one and Python found it among the loaded libraries
 * (use_openmp): the kernels then run on the same worker threads as every PyTorch op. With a thread
 * pool of their own, PyTorch's workers, still spinning after the previous op, would take the cores
 * from them (measured: 0.80 ms against 0.47 ms for a layer run right after a matmul). */
typedef void (*GompParallel)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*OmpInt)(void);
static GompParallel gomp_parallel = NULL;
static OmpInt omp_thread_num = NULL, omp_num_threads = NULL;

typedef struct { Part *parts; int threads; } Team;

static void team_main(void *arg)
{
    Team *team = (Team *)arg;
    int size = omp_num_threads(); /* the runtime may give fewer threads than asked: they share */
    for (int t = omp_thread_num(); t < team->threads; t += size) part_main(&team->parts[t]);
}

/* Runs fn over items [0, items) split evenly over up to `threads` threads (the caller's included). */
static void parallel(int threads, long items, RangeFn fn, const void *ctx)
{
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > items) threads = (int)items;
    if (threads < 1) threads = 1;
    Part parts[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        parts[t].fn = fn;
        parts[t].ctx = ctx;
        parts[t].i0 = items * t / threads;
        parts[t].i1 = items * (t + 1) / threads;
        started[t] = 0;
    }
    if (threads == 1) {
        part_main(&parts[0]);
        return;
    }
    if (gomp_parallel) {
        Team team = {parts, threads};
        gomp_parallel(team_main, &team, (unsigned)threads, 0);
        return;
    }
    for (int t = 1; t < threads; t++) started[t] = pthread_create(&tid[t], NULL, part_main, &parts[t]) == 0;
    part_main(&parts[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        else part_main(&parts[t]); /* no thread to be had: the work is still done */
    }
}

static int threads_for(double flops, int threads)
{
    double most = flops / FLOPS_PER_THREAD;
    if (most < threads) threads = most < 1.0 ? 1 : (int)most;
    return threads;
}

/* ------------------------------------------------------------------------- workspace */

/* A thread's own scratch, kept between calls as BLAS libraries keep their packing buffers (it does
 * not grow with the problem: at most CL_WORKSPACE_MAX_C x 32 floats, 256 KiB), freed when the
 * thread ends. NULL when there is no memory. */
static pthread_key_t ws_key, gw_key;
static pthread_once_t ws_once = PTHREAD_ONCE_INIT;
static void ws_free(void *p) { free(p); }
static void ws_init(void)
{
    (void)pthread_key_create(&ws_key, ws_free);
    (void)pthread_key_create(&gw_key, ws_free);
}

static float *kept_buffer(const pthread_key_t *key, size_t floats)
{
    (void)pthread_once(&ws_once, ws_init); /* before the key is read: it is created there */
    float *ws = (float *)pthread_getspecific(*key); /* ws[0..15]: the capacity, then the data */
    if (ws && *(size_t *)ws >= floats) return ws + 16;
    free(ws);
    ws = (float *)aligned_alloc(64, (16 + floats) * sizeof(float) / 64 * 64 + 64);
    (void)pthread_setspecific(*key, ws);
    if (!ws) return NULL;
    *(size_t *)ws = floats;
    return ws + 16;
}

static float *workspace(size_t floats) { return kept_buffer(&ws_key, floats); }

/* The calling thread's scratch for grad_weight's transposed result (K x C floats), kept between
 * calls up to GW_KEPT_FLOATS, as the workspace is (a fresh one of megabytes can pay its page
 * faults on every call); a larger one is allocated per call and freed. */
static float *gw_scratch(size_t floats)
{
    if (floats > GW_KEPT_FLOATS) return (float *)malloc(floats * sizeof(float));
    return kept_buffer(&gw_key, floats);
}

static void gw_scratch_done(float *t, size_t floats)
{
    if (floats > GW_KEPT_FLOATS) free(t);
}

/* ------------------------------------------------------------------- the kernels, per ISA */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HAVE_X86_VARIANTS 1

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx2,fma")
#define NAME(f) CAT(f, avx512)
#define VL 16
#define MRMAX 12
#define MK 4
#define MC 6
#include "_native_kernels.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define NAME(f) CAT(f, avx2)
#define VL 8
#define MRMAX 6
#define MK 3
#define MC 4
#include "_native_kernels.h"
#pragma GCC pop_options
#endif

#define NAME(f) CAT(f, base)
#define VL 4
#define MRMAX 6
#define MK 3
#define MC 4
#include "_native_kernels.h"

typedef struct {
    const char *name;
    int vl, mrmax, mk, mc;
    int (*fwd_items)(const Fwd *, long, long);
    void (*gw_rect)(const Gw *, long, long, long, long);
    int (*gw_outer)(const Gw *, long, long, long, long);
    void (*cl_pack)(const Cl *, float *, float *);
    int (*cl_fwd_items)(const Cl *, long, long);
    void (*cl_gw_blocks)(const ClGw *, long, long);
} Isa;

static Isa isa;

static int isa_supported(const char *name)
{
#ifdef HAVE_X86_VARIANTS
    __builtin_cpu_init();
    if (!strcmp(name, "avx512"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq");
    if (!strcmp(name, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return !strcmp(name, "base");
}

static void use_isa(const char *name)
{
#ifdef HAVE_X86_VARIANTS
    if (!strcmp(name, "avx512")) {
        isa = (Isa){"avx512", 16, 12, 4, 6, fwd_items_avx512, gw_rect_avx512, gw_outer_avx512,
                    cl_pack_avx512, cl_fwd_items_avx512, cl_gw_blocks_avx512};
        return;
    }
    if (!strcmp(name, "avx2")) {
        isa = (Isa){"avx2", 8, 6, 3, 4, fwd_items_avx2, gw_rect_avx2, gw_outer_avx2,
                    cl_pack_avx2, cl_fwd_items_avx2, cl_gw_blocks_avx2};
        return;
    }
#endif
    isa = (Isa){"base", 4, 6, 3, 4, fwd_items_base, gw_rect_base, gw_outer_base,
                cl_pack_base, cl_fwd_items_base, cl_gw_blocks_base};
}

static void pick_isa(void)
{
    use_isa(isa_supported("avx512") ? "avx512" : isa_supported("avx2") ? "avx2" : "base");
}

#ifdef HAVE_X86_VARIANTS
#include "_native_amx.h"
#endif

/* ----------------------------------------------------------------------------- drivers */

static void fwd_range(const void *ctx, long i0, long i1)
{
    Fwd *j = (Fwd *)ctx;
    if (isa.fwd_items(j, i0, i1)) j->failed = 1;
}

static int run_forward(Fwd *j, int threads)
{
    long nb = 2L * isa.vl;
    j->pfy = FWD_PREFETCH_Y && (double)j->N * j->K * j->P * sizeof(float) > PREFETCH_Y_MIN_BYTES;
    j->kc = j->C < KCMAX ? j->C : KCMAX;
    /* a sum over 1024 channels or more (4 chunks) on images of 14 x 14 or less, in a forward (the
     * weights' rows contiguous, not W^T as in grad_input): larger tiles, each block of weights in
     * L1 meeting more pixels (ResNet-50's 2048x7x7 -> 512 and 1024x14x14 -> 256 at batch 32:
     * 0.90-0.93x of the time; neutral on the other layers measured, slower on 28 x 28 images and
     * for grad_input) */
    long tile_bytes = j->wc == 1 && j->C >= 1024 && j->P <= 196 ? WIDE_TILE_BYTES : TILE_BYTES;
    long budget = tile_bytes / (long)sizeof(float) / (j->kc > 0 ? j->kc : 1); /* pixels per item */
    long nc = budget / nb * nb, ng = 1;
    if (nc < nb) nc = nb;
    if (j->P <= budget) { /* whole images, as many as fit */
        nc = j->P;
        ng = budget / j->P;
        if (ng > j->N) ng = j->N;
    }
    threads = threads_for(2.0 * j->N * j->P * j->C * j->K, threads);
    long per_image = (j->P + nc - 1) / nc;
    if ((j->N + ng - 1) / ng * per_image < 4L * threads) { /* too few items to share: smaller ones */
        ng = j->N / (4L * threads) > 0 ? j->N / (4L * threads) : 1;
        if (j->N * per_image < 4L * threads) {
            long want = (4L * threads + j->N - 1) / j->N;
            long smaller = ((j->P + want - 1) / want + nb - 1) / nb * nb;
            if (smaller < nc) nc = smaller < nb ? nb : smaller;
            per_image = (j->P + nc - 1) / nc;
        }
    }
    j->nc = nc;
    j->ng = ng;
    /* Weight rows a multiple of 4 KiB apart all fall in one set of the L1 cache, too few ways for a
     * block's rows: such blocks are copied into one stream first, where enough pixels share each
     * copy (ResNet-50's 1024- and 2048-channel layers over 7 x 7 images at batch 32: 1.25x; on
     * small items, and on other strides, the copy costs more than it saves: measured) */
    /* images under two micro-tiles wide (7 x 7, 3 x 3) go side by side through a panel, in groups
     * of at least two, while the panels stay a small share of the input; the group size is the one
     * that leaves the fewest idle lanes and threads (7 x 7 at batch 32 on 2 threads: groups of 4,
     * 8 rounds of 208 lanes, where groups of 3 took 6 of 160 on one thread and 5 on the other) */
    long width = 0;
    if (j->P < 2 * nb && per_image == 1 && j->N >= 2) {
        double best = 0;
        for (long g = 2; g <= j->N && g * j->P <= 2 * budget; g++) {
            long w = (g * j->P + isa.vl - 1) / isa.vl * isa.vl;
            if ((double)threads * j->kc * w > PANEL_SHARE * j->base) break;
            double cost = (double)(((j->N + g - 1) / g + threads - 1) / threads) * w;
            if (width == 0 || cost < best) best = cost, width = w, ng = g;
        }
    }
    j->panel = width;
    j->ng = ng;
    /* every pixel of the batch in one tile (single small images: 7 x 7 at batch 1), yet cut into
     * pixel tiles for the threads: each thread then streams all the weights for a few pixels and
     * one gets the ragged end (its 17 pixels as two overlapping 16-wide tiles). The threads take
     * slices of the output channels instead, the whole image each (832x7x7 -> 384 at batch 1:
     * forward and grad_input 1.41x faster; -DKSPLIT=0 restores the pixel tiles to compare): */
    j->kslice = 0;
    long items = (j->N + ng - 1) / ng * per_image;
    if (KSPLIT && !width && threads > 1 && j->N * j->P <= budget && j->K >= 2L * isa.mrmax * threads) {
        j->nc = nc = j->P;
        j->ng = ng = j->N;
        long blocks = (j->K + isa.mrmax - 1) / isa.mrmax;
        j->kslice = (blocks + threads - 1) / threads * isa.mrmax;
        items = (j->K + j->kslice - 1) / j->kslice;
    }
    long item_pixels = ng * (j->P < nc ? j->P : nc);
    j->pack = j->wc == 1 && j->wk % 1024 == 0 && item_pixels >= PACK_MIN_PIXELS;
    j->failed = 0;
    parallel(threads, items, fwd_range, j);
    return j->failed ? -1 : 0;
}

static void gw_range(const void *ctx, long i0, long i1)
{
    const Gw *j = (const Gw *)ctx;
    long k0 = 0, k1 = j->K, c0 = 0, c1 = j->C;
    if (j->outer) {
        long nb = 2L * isa.vl;
        if (j->along_k) k0 = i0 * isa.mrmax, k1 = i1 * isa.mrmax < j->K ? i1 * isa.mrmax : j->K;
        else c0 = i0 * nb, c1 = i1 * nb < j->C ? i1 * nb : j->C;
        if (isa.gw_outer(j, k0, k1, c0, c1) == 0) return;
        /* no memory for the transposed tile: the same sums as dot products, which need none */
    } else if (j->along_k) {
        k0 = i0 * isa.mk, k1 = i1 * isa.mk < j->K ? i1 * isa.mk : j->K;
    } else {
        c0 = i0 * isa.mc, c1 = i1 * isa.mc < j->C ? i1 * isa.mc : j->C;
    }
    isa.gw_rect(j, k0, k1, c0, c1);
}

/* method: 0 dot products, 1 outer products on x's transposed tiles, 2 outer products on whichever
 * operand has fewer rows, -1 the measured choice */
static void run_grad_weight(Gw *j, int threads, int method)
{
    threads = threads_for(2.0 * j->N * j->P * j->C * j->K, threads);
    /* dot products fold their lanes once per tile: they win only with few channels, where the outer
     * products' transposition (about 16/K of the work) costs more (benchmarks/native_vs_blas.py) */
    j->outer = method >= 0 ? method > 0 : j->K + j->C > GW_DOT_MAX_CHANNELS;
    double np = (double)j->N * j->P;
    if (j->outer && method != 1 && j->K * (np + j->C) < j->C * np) {
        /* cheaper to transpose g's tiles (K rows) and the K x C result than x's tiles (C rows):
         * out^T = sum of x[n, c, p] * g[n, k, p] into a scratch, then added into out */
        size_t floats = (size_t)(j->K * j->C);
        float *t = gw_scratch(floats);
        if (t) {
            Gw sw = *j;
            sw.g = j->x, sw.gn = j->xn, sw.gc = j->xc;
            sw.x = j->g, sw.xn = j->gn, sw.xc = j->gc;
            sw.K = j->C, sw.C = j->K, sw.out = t, sw.ok = j->K, sw.accumulate = 0;
            run_grad_weight(&sw, threads, 1);
            for (long k0 = 0; k0 < j->K; k0 += 32) /* in 32 x 32 blocks: whole cache lines each way */
                for (long c0 = 0; c0 < j->C; c0 += 32)
                    for (long k = k0; k < k0 + 32 && k < j->K; k++) {
                        float *row = j->out + k * j->ok;
                        for (long c = c0; c < c0 + 32 && c < j->C; c++)
                            row[c] = (j->accumulate ? row[c] : 0.0f) + t[c * j->K + k];
                    }
            gw_scratch_done(t, floats);
            return;
        }
    }
    if (j->outer) {
        long nb = 2L * isa.vl;
        long kblocks = (j->K + isa.mrmax - 1) / isa.mrmax, cblocks = (j->C + nb - 1) / nb;
        j->along_k = cblocks < threads && kblocks > cblocks;
        parallel(threads, j->along_k ? kblocks : cblocks, gw_range, j);
        return;
    }
    long kblocks = (j->K + isa.mk - 1) / isa.mk, cblocks = (j->C + isa.mc - 1) / isa.mc;
    j->along_k = kblocks >= cblocks;
    long nc = TILE_BYTES / (long)sizeof(float) / (j->K + j->C > 0 ? j->K + j->C : 1) / isa.vl * isa.vl;
    j->nc = nc < isa.vl ? isa.vl : nc;
    parallel(threads, j->along_k ? kblocks : cblocks, gw_range, j);
}

static void cl_fwd_range(const void *ctx, long i0, long i1)
{
    Cl *j = (Cl *)ctx;
    if (isa.cl_fwd_items(j, i0, i1)) j->failed = 1;
}

/* budget: the most floats a packed copy of the whole column operand may take (<= 0: no limit) */
static int run_forward_cl(Cl *j, int threads, double budget)
{
    long nb = 2L * isa.vl, blocks = (j->K + nb - 1) / nb;
    threads = threads_for(2.0 * j->P * j->C * j->K, threads);
    /* small inputs (in L2) with many output columns go column block by column block: each thread
     * reads its share of W^T once instead of all of it per pixel tile (measured); so does anything
     * whose whole packed W^T would be over the budget */
    double whole = (double)blocks * nb * j->C;
    j->by_columns = j->C <= CL_WORKSPACE_MAX_C &&
                    ((blocks >= 2L * threads && (double)j->P * j->C <= CL_COLUMNS_MAX_INPUT) ||
                     (budget > 0 && whole > budget));
    j->failed = 0;
    j->pfy = CL_PREFETCH_Y && (double)j->P * j->K * sizeof(float) > PREFETCH_Y_MIN_BYTES;
    j->pfx = CL_PREFETCH_X && (double)j->P * j->C * sizeof(float) > PREFETCH_X_MIN_BYTES;
    if (j->by_columns) {
        parallel(threads, blocks, cl_fwd_range, j);
        return j->failed ? -1 : 0;
    }
    float *wp = (float *)malloc((size_t)(blocks * nb * (j->C > 0 ? j->C : 1) + blocks * nb) * sizeof(float));
    if (!wp) return -1;
    float *bp = j->bias ? wp + blocks * nb * j->C : NULL;
    isa.cl_pack(j, wp, bp);
    j->wp = wp;
    j->bp = bp;
    /* a tile's input rows (tile x C floats) stay in L2 while every column block passes over them */
    long tile = TILE_BYTES / (long)sizeof(float) / (j->C > 0 ? j->C : 1) / isa.mrmax * isa.mrmax;
    if (tile < isa.mrmax) tile = isa.mrmax;
    if (tile > 16L * isa.mrmax) tile = 16L * isa.mrmax;
    long items = (j->P + tile - 1) / tile;
    if (items < 4L * threads) { /* too few tiles to share: smaller ones */
        long smaller = ((j->P + 4L * threads - 1) / (4L * threads) + isa.mrmax - 1) / isa.mrmax * isa.mrmax;
        tile = smaller < isa.mrmax ? isa.mrmax : smaller;
        items = (j->P + tile - 1) / tile;
    }
    j->tile = tile;
    parallel(threads, items, cl_fwd_range, j);
    free(wp);
    return j->failed ? -1 : 0;
}

static void cl_gw_range(const void *ctx, long i0, long i1) { isa.cl_gw_blocks((const ClGw *)ctx, i0, i1); }

/* grad_weight split by pixels: part t sums its share of the pixels over every block */
typedef struct {
    ClGw *part;
    long blocks;
} ClGwSplit;

static void cl_gw_split_range(const void *ctx, long i0, long i1)
{
    const ClGwSplit *s = (const ClGwSplit *)ctx;
    for (long t = i0; t < i1; t++) isa.cl_gw_blocks(&s->part[t], 0, s->blocks);
}

/* Narrow layers (K x C outputs within CL_GW_SPLIT_MAX_OUT) share out the pixels instead of the
 * blocks: threads that split the blocks each read all of x, and on a batch x comes from memory;
 * here each thread reads its share once, sums into a K x C buffer of its own (the first thread into
 * out), and the buffers are added at the end. Returns 0 when it ran, -1 when it did not (no memory,
 * or not worth it). */
static int cl_gw_by_pixels(ClGw *j, int threads, long blocks)
{
    if (threads < 2 || (double)j->K * j->C > CL_GW_SPLIT_MAX_OUT || j->P < (long)threads * j->tile) return -1;
    size_t kc = (size_t)j->K * j->C;
    float *buf = (float *)malloc((size_t)(threads - 1) * kc * sizeof(float));
    ClGw *part = (ClGw *)malloc((size_t)threads * sizeof(ClGw));
    if (!buf || !part) {
        free(buf);
        free(part);
        return -1;
    }
    for (int t = 0; t < threads; t++) {
        long p0 = j->P * t / threads, p1 = j->P * (t + 1) / threads;
        part[t] = *j;
        part[t].g = j->g + p0 * j->gp;
        part[t].x = j->x + p0 * j->xp;
        part[t].P = p1 - p0;
        if (t > 0) {
            part[t].out = buf + (size_t)(t - 1) * kc;
            part[t].ok = j->C;
            part[t].accumulate = 0;
        }
    }
    ClGwSplit s = {part, blocks};
    parallel(threads, threads, cl_gw_split_range, &s);
    for (int t = 1; t < threads; t++)
        for (long k = 0; k < j->K; k++) {
            float *o = j->out + k * j->ok;
            const float *b = part[t].out + k * j->C;
            for (long c = 0; c < j->C; c++) o[c] += b[c];
        }
    free(buf);
    free(part);
    return 0;
}

static void run_grad_weight_cl(ClGw *j, int threads)
{
    long nb = 2L * isa.vl;
    long blocks = ((j->K + isa.mrmax - 1) / isa.mrmax) * ((j->C + nb - 1) / nb);
    /* a tile of both operands (tile x (K + C) floats) in L2, but at least CL_GW_MIN_TILE pixels:
     * each block of sums is loaded and stored once per tile, and on wide layers the L2 budget alone
     * gave tiles of 24 pixels (1024 x 1024 at 7 x 7, batch 32: 0.85x of the time with 128) */
    long tile = TILE_BYTES / (long)sizeof(float) / (j->K + j->C > 0 ? j->K + j->C : 1);
    j->tile = tile < CL_GW_MIN_TILE ? CL_GW_MIN_TILE : tile > CL_GW_TILE ? CL_GW_TILE : tile;
    threads = threads_for(2.0 * j->P * j->C * j->K, threads);
    if (cl_gw_by_pixels(j, threads, blocks) == 0) return;
    parallel(threads, blocks, cl_gw_range, j);
}

/* ---------------------------------------------------------------------------- Python */

static void *as_ptr(Py_ssize_t v) { return (void *)(uintptr_t)v; }

static PyObject *py_forward(PyObject *self, PyObject *args)
{
    Py_ssize_t x, xn, xc, y, yn, yc, w, wk, wc, bias, N, C, K, P, base = 0;
    int act, threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnnnnnnii|n", &x, &xn, &xc, &y, &yn, &yc, &w, &wk, &wc, &bias, &N,
                          &C, &K, &P, &act, &threads, &base))
        return NULL;
    if (N < 0 || C < 1 || K < 0 || P < 0 || act < 0 || act > 2) {
        PyErr_Format(PyExc_ValueError, "forward: bad sizes N=%zd C=%zd K=%zd P=%zd act=%d", N, C, K, P, act);
        return NULL;
    }
    Fwd j = {.x = as_ptr(x), .xn = xn, .xc = xc, .y = as_ptr(y), .yn = yn, .yc = yc, .w = as_ptr(w), .wk = wk,
             .wc = wc, .bias = as_ptr(bias), .N = N, .C = C, .K = K, .P = P, .act = act};
    j.base = base > 0 ? (double)base : (double)N * C * P;
    int rc = 0;
    if (N > 0 && K > 0 && P > 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = run_forward(&j, threads);
        Py_END_ALLOW_THREADS
    }
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_grad_weight(PyObject *self, PyObject *args)
{
    Py_ssize_t g, gn, gc, x, xn, xc, out, ok, N, K, C, P;
    int accumulate, threads, method = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnnnnii|i", &g, &gn, &gc, &x, &xn, &xc, &out, &ok, &N, &K, &C, &P,
                          &accumulate, &threads, &method))
        return NULL;
    if (N < 0 || K < 0 || C < 0 || P < 0) {
        PyErr_Format(PyExc_ValueError, "grad_weight: bad sizes N=%zd K=%zd C=%zd P=%zd", N, K, C, P);
        return NULL;
    }
    Gw j = {as_ptr(g), gn, gc, as_ptr(x), xn, xc, as_ptr(out), ok, N, K, C, P, accumulate, 0, 0, 0};
    if (K > 0 && C > 0) {
        Py_BEGIN_ALLOW_THREADS
        run_grad_weight(&j, threads, method);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyObject *py_forward_cl(PyObject *self, PyObject *args)
{
    Py_ssize_t x, xp, y, yp, w, si, sj, bias, P, C, K, budget = 0, wo = 0, ho = 1, xw = 0, xh = 0, xn = 0;
    Py_ssize_t xc = 1, yk = 1, yn = 0;
    int act, threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnnnii|nnnnnnnnn", &x, &xp, &y, &yp, &w, &si, &sj, &bias, &P, &C, &K,
                          &act, &threads, &budget, &wo, &ho, &xw, &xh, &xn, &xc, &yk, &yn))
        return NULL;
    if (wo <= 0) wo = P > 0 ? P : 1, ho = 1, xw = xp, xh = 0, xn = 0; /* one row: every pixel xp apart */
    if (ho < 1 || P % wo || (P / wo) % ho) {
        PyErr_Format(PyExc_ValueError, "forward_cl: P=%zd pixels are not whole rows of %zd, %zd per image", P,
                     wo, ho);
        return NULL;
    }
    if (P < 0 || C < 1 || K < 0 || act < 0 || act > 2) {
        PyErr_Format(PyExc_ValueError, "forward_cl: bad sizes P=%zd C=%zd K=%zd act=%d", P, C, K, act);
        return NULL;
    }
    Cl j = {.x = as_ptr(x), .xp = xp, .y = as_ptr(y), .yp = yp, .w = as_ptr(w), .si = si, .sj = sj,
            .bias = as_ptr(bias), .P = P, .C = C, .K = K, .act = act, .wo = wo, .ho = ho, .xw = xw, .xh = xh,
            .xn = xn, .xc = xc, .yk = yk, .yn = yn};
    int rc = 0;
    if (P > 0 && K > 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = run_forward_cl(&j, threads, (double)budget);
        Py_END_ALLOW_THREADS
    }
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_grad_weight_cl(PyObject *self, PyObject *args)
{
    Py_ssize_t g, gp, x, xp, out, ok, P, K, C;
    int accumulate, threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnii", &g, &gp, &x, &xp, &out, &ok, &P, &K, &C, &accumulate, &threads))
        return NULL;
    if (P < 0 || K < 0 || C < 0) {
        PyErr_Format(PyExc_ValueError, "grad_weight_cl: bad sizes P=%zd K=%zd C=%zd", P, K, C);
        return NULL;
    }
    ClGw j = {as_ptr(g), gp, as_ptr(x), xp, as_ptr(out), ok, P, K, C, accumulate, 0};
    if (K > 0 && C > 0) {
        if (P == 0 && !accumulate) {
            for (Py_ssize_t k = 0; k < K; k++) memset((float *)as_ptr(out) + k * ok, 0, (size_t)C * sizeof(float));
        } else if (P > 0) {
            Py_BEGIN_ALLOW_THREADS
            run_grad_weight_cl(&j, threads);
            Py_END_ALLOW_THREADS
        }
    }
    Py_RETURN_NONE;
}

static PyObject *py_gemm_bf16(PyObject *self, PyObject *args)
{
    Py_ssize_t a, lda, an, b, sbk, sbn, bn, out, som, son, on, bias, images, M, N, Kd;
    int bias_rows, act, threads, out_f32 = 0, accumulate = 0, sum_images = 0;
    Py_ssize_t sak = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnnnnnnnnnii|iiin", &a, &lda, &an, &b, &sbk, &sbn, &bn, &out, &som, &son,
                          &on, &bias, &bias_rows, &images, &M, &N, &Kd, &act, &threads, &out_f32, &accumulate,
                          &sum_images, &sak))
        return NULL;
    if (images < 0 || M < 0 || N < 0 || Kd < 1 || act < 0 || act > 2) {
        PyErr_Format(PyExc_ValueError, "gemm_bf16: bad sizes images=%zd M=%zd N=%zd Kd=%zd act=%d", images, M, N,
                     Kd, act);
        return NULL;
    }
    if (sak != 1 && lda != 1) {
        PyErr_Format(PyExc_ValueError, "gemm_bf16: A with sak=%zd needs lda=1 (its columns contiguous), got %zd",
                     sak, lda);
        return NULL;
    }
    if ((accumulate || sum_images) && (bias || act)) { /* they would be applied to each partial sum */
        PyErr_SetString(PyExc_ValueError, "gemm_bf16: no bias or activation on a sum over calls or images");
        return NULL;
    }
#ifdef HAVE_X86_VARIANTS
    if (!amx_ready) {
        PyErr_SetString(PyExc_RuntimeError, "gemm_bf16: this CPU (or its kernel) gives no AMX-BF16 tiles");
        return NULL;
    }
    Amx j = {.a = as_ptr(a), .lda = lda, .an = an, .b = as_ptr(b), .sbk = sbk, .sbn = sbn, .bn = bn,
             .out = as_ptr(out), .som = som, .son = son, .on = on, .bias = as_ptr(bias),
             .bias_rows = bias_rows, .images = images, .M = M, .N = N, .Kd = Kd, .act = act,
             .out_f32 = out_f32, .accumulate = accumulate, .sum_images = sum_images, .sak = sak};
    int rc = 0;
    if (images > 0 && M > 0 && N > 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = run_amx(&j, threads);
        Py_END_ALLOW_THREADS
    }
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
#else
    (void)a, (void)lda, (void)an, (void)b, (void)sbk, (void)sbn, (void)bn, (void)out, (void)som, (void)son;
    (void)on, (void)bias, (void)bias_rows, (void)threads, (void)out_f32, (void)accumulate, (void)sum_images;
    (void)sak;
    PyErr_SetString(PyExc_RuntimeError, "gemm_bf16: built without the AMX kernel");
    return NULL;
#endif
}

static PyObject *py_amx(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
#ifdef HAVE_X86_VARIANTS
    return PyBool_FromLong(amx_ready);
#else
    Py_RETURN_FALSE;
#endif
}

static PyObject *py_use_openmp(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *path = PyUnicode_AsUTF8(arg);
    if (!path) return NULL;
    if (!*path) { /* "": back to threads of the kernels' own (to measure what sharing buys) */
        gomp_parallel = NULL;
        Py_RETURN_FALSE;
    }
    void *lib = dlopen(path, RTLD_LAZY | RTLD_NOLOAD); /* only a runtime that is already loaded */
    if (!lib) Py_RETURN_FALSE;
    GompParallel par = (GompParallel)dlsym(lib, "GOMP_parallel");
    OmpInt num = (OmpInt)dlsym(lib, "omp_get_thread_num"), size = (OmpInt)dlsym(lib, "omp_get_num_threads");
    if (!par || !num || !size) {
        dlclose(lib);
        Py_RETURN_FALSE;
    }
    gomp_parallel = par;
    omp_thread_num = num;
    omp_num_threads = size;
    Py_RETURN_TRUE; /* the handle stays open: the runtime must outlive every call */
}

static PyObject *py_threading(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    return PyUnicode_FromString(gomp_parallel ? "openmp" : "pthreads");
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    if (strcmp(name, "avx512") && strcmp(name, "avx2") && strcmp(name, "base")) {
        PyErr_Format(PyExc_ValueError, "isa must be 'avx512', 'avx2' or 'base', got %R", arg);
        return NULL;
    }
    if (!isa_supported(name)) Py_RETURN_FALSE;
    use_isa(name);
    Py_RETURN_TRUE;
}

static PyObject *py_isa(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    return PyUnicode_FromString(isa.name);
}

static PyMethodDef methods[] = {
    {"forward", py_forward, METH_VARARGS,
     "forward(x, xn, xc, y, yn, yc, w, wk, wc, bias, N, C, K, P, act, threads, base=0): "
     "y[n,k,p] = act(sum_c w[k,c] x[n,c,p] + bias[k]) on float32 data pointers and element strides; "
     "scratch at most a share of base floats (default N*C*P, x's size)."},
    {"grad_weight", py_grad_weight, METH_VARARGS,
     "grad_weight(g, gn, gc, x, xn, xc, out, ok, N, K, C, P, accumulate, threads, method=-1): "
     "out[k,c] (+)= sum over n, p of g[n,k,p] x[n,c,p]; method 0 dot products, 1 outer products, "
     "2 outer products transposing the narrower operand, -1 the measured choice."},
    {"forward_cl", py_forward_cl, METH_VARARGS,
     "forward_cl(x, xp, y, yp, w, si, sj, bias, P, C, K, act, threads, budget=0, wo=0, ho=1, xw=0, xh=0, "
     "xn=0, xc=1, yk=1, yn=0): channels_last y[p,j] = act(sum_i x[p,i] w(i,j) + bias[j]), w(i, j) at w + i*si + "
     "j*sj; a packed copy of the whole of w only within budget floats (0: no limit), else block by block; "
     "with wo > 0 the pixels are rows of wo, ho per image, pixel p at x + (p/wo/ho)*xn + (p/wo%ho)*xh + "
     "(p%wo)*xw (a strided input); x[p,i] at that pixel + i*xc, y[p,j] at y + p*yp + j*yk, or with "
     "yk != 1 (channel-major images) at y + (p/(wo*ho))*yn + (p%(wo*ho))*yp + j*yk."},
    {"grad_weight_cl", py_grad_weight_cl, METH_VARARGS,
     "grad_weight_cl(g, gp, x, xp, out, ok, P, K, C, accumulate, threads): channels_last "
     "out[k,c] (+)= sum over p of g[p,k] x[p,c]."},
    {"gemm_bf16", py_gemm_bf16, METH_VARARGS,
     "gemm_bf16(a, lda, an, b, sbk, sbn, bn, out, som, son, on, bias, bias_rows, images, M, N, Kd, act, threads, "
     "out_f32=0, accumulate=0, sum_images=0, sak=1): on AMX tiles, per image i, out(m, n) = act(sum_kk A(m, kk) B(kk, n) "
     "+ bias) from bfloat16, summed in float32; A(m, kk) at a + i*an + m*lda + kk*sak (sak != 1: lda must be 1), "
     "B(kk, n) at "
     "b + i*bn + kk*sbk + n*sbn, out(m, n) at out + i*on + m*som + n*son, bias[m] (bias_rows) or bias[n] or none "
     "(0); element strides. out is bfloat16, or float32 with out_f32; accumulate adds to it; sum_images sums "
     "every image's product into the one output."},
    {"amx", py_amx, METH_NOARGS, "Whether gemm_bf16 can run here (AMX-BF16 tiles granted to this process)."},
    {"use_openmp", py_use_openmp, METH_O,
     "use_openmp(path): run the threads on the OpenMP runtime loaded from path (already loaded); "
     "returns whether it could. use_openmp('') goes back to threads of the kernels' own."},
    {"threading", py_threading, METH_NOARGS, "Where the kernels' threads come from: openmp or pthreads."},
    {"set_isa", py_set_isa, METH_O,
     "set_isa(name): run on another instruction set's build (avx512, avx2, base) if this CPU has it; "
     "returns whether it could. For testing every build on one machine."},
    {"isa", py_isa, METH_NOARGS, "The instruction set the kernels run on: avx512, avx2 or base."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native",
                                    "Direct float32 pointwise-convolution kernels.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void)
{
    pick_isa();
#ifdef HAVE_X86_VARIANTS
    amx_init();
#endif
    return PyModule_Create(&module);
}
