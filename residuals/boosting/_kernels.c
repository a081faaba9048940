/*
 * The hot loops of hist mode on the CPU, in C: the histograms of a node's rows,
 * the selection of a level's rows, the routing of rows one level down, and
 * the split search of a level. See residuals/boosting/_kernels.py, which
 * loads this library with ctypes (it is built as an optional extension
 * module: when no C compiler is at hand the package installs without it and
 * hist mode runs the same arithmetic in torch and numpy, in _hist.py).
 *
 * Every loop does what its torch/numpy version in _hist.py does, in the same
 * order: every histogram cell adds its rows in row order, as torch's CPU
 * scatter_add_ does, and every cumulative sum runs bin by bin, as torch's
 * cumsum does, so the two give bit-identical trees (tests/test_hist_kernels.py).
 * Built without fused multiply-adds (-ffp-contract=off, setup.py).
 *
 * Layouts: XT is (F, n) uint8 bins, feature-major (row i of feature f at
 * XT[f * n + i]). Values are k doubles per row (k = 1: one real value; k = 2:
 * a complex128 w*g + 1j*w*h, stored as its real and imaginary parts).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#endif

#if defined(_WIN32)
#define RESIDUALS_EXPORT __declspec(dllexport)
#define RESTRICT __restrict
#else
#define RESIDUALS_EXPORT __attribute__((visibility("default")))
#define RESTRICT __restrict__
#endif

/* Bumped whenever a signature or a semantic here changes: the Python side
 * refuses a library built from another version (a stale build after an update). */
#define RESIDUALS_KERNELS_VERSION 11
RESIDUALS_EXPORT int64_t residuals_kernels_version(void) { return RESIDUALS_KERNELS_VERSION; }

/*
 * out[(node_i * node_stride + f * feature_stride + XT[f, r_i]) * k + c] += v[i * k + c]
 *
 * for f in [f0, f1), i in [0, m), c in [0, k): r_i = rows[i] (or i when rows
 * is NULL), node_i = nodes[i] (or 0 when nodes is NULL). v holds the m rows'
 * values in that order (gathered by the caller: once per call, not once per
 * feature). The strides (in values) lay the histograms out as (F, n_nodes,
 * nb) (feature_stride = n_nodes * nb, node_stride = nb) or (n_nodes, F, nb)
 * (node_stride = F * nb, feature_stride = nb). The caller splits [0, F)
 * between threads: features write disjoint cells of out.
 */
RESIDUALS_EXPORT void residuals_hist(const uint8_t *XT, int64_t n, const double *v, int64_t k,
                                     const int64_t *rows, const int64_t *nodes, int64_t m,
                                     int64_t node_stride, int64_t feature_stride, double *out,
                                     int64_t f0, int64_t f1)
{
    for (int64_t f = f0; f < f1; ++f) {
        const uint8_t *x = XT + f * n;
        double *o = out + f * feature_stride * k;
        if (k == 2) {
            if (!rows) {
                for (int64_t i = 0; i < m; ++i) {
                    const int64_t b = 2 * (int64_t)x[i];
                    o[b] += v[2 * i];
                    o[b + 1] += v[2 * i + 1];
                }
            } else if (!nodes) {
                for (int64_t i = 0; i < m; ++i) {
                    const int64_t b = 2 * (int64_t)x[rows[i]];
                    o[b] += v[2 * i];
                    o[b + 1] += v[2 * i + 1];
                }
            } else {
                for (int64_t i = 0; i < m; ++i) {
                    const int64_t b = 2 * (nodes[i] * node_stride + (int64_t)x[rows[i]]);
                    o[b] += v[2 * i];
                    o[b + 1] += v[2 * i + 1];
                }
            }
        } else {
            if (!rows) {
                for (int64_t i = 0; i < m; ++i) o[x[i]] += v[i];
            } else if (!nodes) {
                for (int64_t i = 0; i < m; ++i) o[x[rows[i]]] += v[i];
            } else {
                for (int64_t i = 0; i < m; ++i) o[nodes[i] * node_stride + (int64_t)x[rows[i]]] += v[i];
            }
        }
    }
}

/*
 * The histograms of every node lo <= s < hi of a level in one pass over the rows
 * (s = slot[i]): for f in [f0, f1), i in [0, n), c in [0, k),
 *
 *     out[(((s - lo) * F + f) * nb + XT[f, i]) * k + c] += v[i * k + c]
 *
 * (out is (hi - lo, F, nb) node-major, as the split search reads it). The rows
 * are taken in blocks of LEVEL_BLOCK: a block's selected rows and their values
 * are gathered once into scratch, then scattered feature by feature, so every
 * cell adds its rows in row order (the same bits as residuals_hist over the
 * selected rows, and as torch's scatter_add_). The caller splits [0, F) between
 * threads (each scans the slots itself: 4 bytes a row, against F' bytes of bins);
 * features write disjoint cells, so no thread's sums depend on another's. Each
 * thread zeroes its own cells first (out need not be zeroed): zeroed by another
 * thread, every cache line would first move over from that thread's core.
 * Returns 0, or -1 if the scratch could not be allocated.
 */
#define LEVEL_BLOCK 2048
#define RESIDUALS_LEVEL_HIST(NAME, ROWS_NAME, T)                                                     \
    static int64_t NAME##_part(const uint8_t *XT, int64_t n, const double *v, int64_t k,            \
                               const T *slot, int64_t lo, int64_t hi, int64_t F, int64_t nb,        \
                               double *out, int64_t f0, int64_t f1, int64_t i0, int64_t i1)         \
    {                                                                                               \
        int32_t *rows = malloc(LEVEL_BLOCK * (sizeof(int32_t) * 2 + sizeof(double) * 2));           \
        if (!rows) return -1;                                                                       \
        int32_t *nodes = rows + LEVEL_BLOCK;                                                        \
        double *vals = (double *)(nodes + LEVEL_BLOCK);                                             \
        const int64_t width = hi - lo, node_stride = F * nb * k;                                    \
        for (int64_t s = 0; s < width; ++s)                                                         \
            memset(out + s * node_stride + f0 * nb * k, 0, (size_t)((f1 - f0) * nb * k) * sizeof(double)); \
        for (int64_t a = i0; a < i1; a += LEVEL_BLOCK) {                                            \
            const int64_t b = a + LEVEL_BLOCK < i1 ? a + LEVEL_BLOCK : i1;                          \
            int64_t m = 0;                                                                          \
            for (int64_t i = a; i < b; ++i) { /* branch-free: every row written, kept if selected */ \
                const int64_t s = (int64_t)slot[i] - lo;                                            \
                rows[m] = (int32_t)(i - a);                                                         \
                nodes[m] = (int32_t)s;                                                              \
                m += (s >= 0) & (s < width);                                                        \
            }                                                                                       \
            if (!m) continue;                                                                       \
            for (int64_t j = 0; j < m; ++j)                                                         \
                for (int64_t c = 0; c < k; ++c) vals[j * k + c] = v[(a + rows[j]) * k + c];        \
            for (int64_t f = f0; f < f1; ++f) {                                                     \
                const uint8_t *x = XT + f * n + a;                                                  \
                double *o = out + f * nb * k;                                                       \
                if (k == 2) {                                                                       \
                    for (int64_t j = 0; j < m; ++j) {                                               \
                        double *cell = o + nodes[j] * node_stride + 2 * (int64_t)x[rows[j]];        \
                        cell[0] += vals[2 * j];                                                     \
                        cell[1] += vals[2 * j + 1];                                                 \
                    }                                                                               \
                } else {                                                                            \
                    for (int64_t j = 0; j < m; ++j)                                                 \
                        o[nodes[j] * node_stride + (int64_t)x[rows[j]]] += vals[j];                 \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        free(rows);                                                                                 \
        return 0;                                                                                   \
    }                                                                                               \
    RESIDUALS_EXPORT int64_t NAME(const uint8_t *XT, int64_t n, const double *v, int64_t k,         \
                                  const T *slot, int64_t lo, int64_t hi, int64_t F, int64_t nb,     \
                                  double *out, int64_t f0, int64_t f1)                              \
    {                                                                                               \
        return NAME##_part(XT, n, v, k, slot, lo, hi, F, nb, out, f0, f1, 0, n);                    \
    }                                                                                               \
    RESIDUALS_EXPORT int64_t ROWS_NAME(const uint8_t *XT, int64_t n, const double *v, int64_t k,    \
                                       T *slot, int64_t lo, int64_t hi, int64_t F, int64_t nb,      \
                                       double *const *outs, const T *column, const T *table,        \
                                       int64_t part, int64_t f0, int64_t f1, int64_t i0, int64_t i1) \
    {                                                                                               \
        if (column) /* route rows [i0, i1) one level down first (their slots stay in cache) */     \
            for (int64_t i = i0; i < i1; ++i) {                                                     \
                const int64_t s = (int64_t)slot[i];                                                 \
                slot[i] = table[s * nb + (int64_t)XT[(int64_t)column[s] * n + i]];                  \
            }                                                                                       \
        return NAME##_part(XT, n, v, k, slot, lo, hi, F, nb, outs[part], f0, f1, i0, i1);           \
    }
RESIDUALS_LEVEL_HIST(residuals_level_hist32, residuals_level_hist_rows32, int32_t)
RESIDUALS_LEVEL_HIST(residuals_level_hist64, residuals_level_hist_rows64, int64_t)

/* out[j] += sum of parts[p][j] over p in [1, n_parts), for j in [j0, j1) (a level's
 * per-thread histograms, parts[0] being out itself; on the grid, exact in any order) */
RESIDUALS_EXPORT void residuals_sum_parts(double *const *parts, int64_t n_parts, int64_t j0, int64_t j1)
{
    double *RESTRICT out = parts[0];
    for (int64_t p = 1; p < n_parts; ++p) {
        const double *RESTRICT src = parts[p];
        for (int64_t j = j0; j < j1; ++j) out[j] += src[j];
    }
}

/*
 * The largest |x[i]| over [i0, i1), or NaN if any x[i] is NaN or infinite (a
 * gradient that has no grid). On x86-64, in SSE2 registers, eight values a step: a
 * compiler keeps a portable running maximum scalar (NaN rules), one long chain of
 * dependent compares, 4x slower than reading the memory (measured).
 */
RESIDUALS_EXPORT double residuals_abs_max(const double *x, int64_t i0, int64_t i1)
{
    double best = 0.0;
    int bad = 0;
    int64_t i = i0;
#if defined(__SSE2__) || defined(_M_X64)
    const __m128d mask = _mm_castsi128_pd(_mm_set1_epi64x(0x7fffffffffffffffLL));
    const __m128d inf = _mm_set1_pd(INFINITY);
    __m128d top[4], odd[4];
    for (int j = 0; j < 4; ++j) top[j] = odd[j] = _mm_setzero_pd();
    for (; i + 8 <= i1; i += 8) {
        for (int j = 0; j < 4; ++j) {
            const __m128d a = _mm_and_pd(_mm_loadu_pd(x + i + 2 * j), mask);
            top[j] = _mm_max_pd(top[j], a);
            odd[j] = _mm_or_pd(odd[j], _mm_cmpnlt_pd(a, inf)); /* NaN or inf: all ones */
        }
    }
    double lanes[2];
    for (int j = 0; j < 4; ++j) {
        _mm_storeu_pd(lanes, top[j]);
        best = lanes[0] > best ? lanes[0] : best;
        best = lanes[1] > best ? lanes[1] : best;
        bad |= _mm_movemask_pd(odd[j]);
    }
#endif
    for (; i < i1; ++i) {
        const double a = fabs(x[i]);
        bad |= !(a < INFINITY);
        best = a > best ? a : best;
    }
    return bad ? NAN : best;
}

/* rint(x) for |x| < 2**52 (the grids' integers: below 2**52 steps) without a call to
 * libm (rint is one unless SSE4.1 may be assumed): adding and taking away 2**52 rounds
 * |x| to an integer, ties to even, as rint does in the default rounding mode. */
static inline double grid_rint(double x)
{
    const double big = 4503599627370496.0; /* 2**52 */
    return copysign((fabs(x) + big) - big, x);
}

/*
 * Rows [i0, i1) of w*g on its fixed-point grid (_grid.py), with w*h (already on its
 * grid) beside it: for i in the range,
 *
 *     q = sign * rint(g[i] / gstep) * gstep;  g_out[i] = q;  gh_out[2 * i] = q;
 *     gh_out[2 * i + 1] = h[i * hs]
 *
 * (rint, as grid_rint, rounds half to even, as torch.round; dividing and multiplying
 * by a power of two is exact, so q is torch's `torch.round(g / gstep) * gstep` bit
 * for bit). hs is h's stride in values: 0 for one constant hessian. sign: 1, or -1
 * when g holds the negative gradient (rint is symmetric: -rint(x) is rint(-x),
 * signed zeros included).
 */
RESIDUALS_EXPORT void residuals_grid_gh(const double *g, double sign, const double *h, int64_t hs,
                                        double gstep, double *g_out, double *gh_out, int64_t i0,
                                        int64_t i1)
{
    /* g * (1 / gstep) is the same real number as g / gstep, so the same double when
     * 1 / gstep is one (a power of two up to 2**1023); a multiply is cheaper than a
     * divide */
    const double inv = 1.0 / gstep;
    const int exact_inverse = isfinite(inv) && inv * gstep == 1.0;
    for (int64_t i = i0; i < i1; ++i) {
        const double x = exact_inverse ? g[i] * inv : g[i] / gstep;
        const double q = sign * (grid_rint(x) * gstep);
        g_out[i] = q;
        gh_out[2 * i] = q;
        gh_out[2 * i + 1] = h[i * hs];
    }
}

/*
 * Bin rows [i0, i1) of X (n rows, F features, float32 if itemsize == 4 else
 * float64, strides in bytes): out[f * n + i] = the number of cuts of feature f
 * strictly below x (after rounding x to float32 when round32), or `missing`
 * for NaN. table: (F, width) cuts, each row sorted and padded with +inf, width
 * a power of two; the search is branch-free, the same log2(width) steps for
 * every value (BinMapper's _count_cuts_below, the same counts). Rows go in
 * blocks of 256 so that a block of X stays in cache while each feature reads
 * its column. Returns how many finite values became infinite when rounded to
 * float32 (too large for float32: an error for the caller).
 */
RESIDUALS_EXPORT int64_t residuals_bin(const char *X, int64_t itemsize, int64_t row_stride,
                                       int64_t col_stride, int64_t n, int64_t F, const double *table,
                                       int64_t width, int64_t round32, int64_t missing, uint8_t *out,
                                       int64_t i0, int64_t i1)
{
    int64_t overflow = 0;
    double xs[256];
    int32_t idx[256];
    for (int64_t a = i0; a < i1; a += 256) {
        const int64_t m = (a + 256 < i1 ? a + 256 : i1) - a;
        for (int64_t f = 0; f < F; ++f) {
            const double *cuts = table + f * width;
            const char *col = X + f * col_stride + a * row_stride;
            for (int64_t j = 0; j < m; ++j) {
                const char *p = col + j * row_stride;
                double x = itemsize == 4 ? (double)*(const float *)p : *(const double *)p;
                if (round32 && itemsize == 8) {
                    const double r = (double)(float)x;
                    overflow += isinf(r) & !isinf(x);
                    x = r;
                }
                xs[j] = x;
                idx[j] = -1;
            }
            /* step by step over the whole block: the values' searches are independent,
             * so their loads overlap instead of waiting on each other */
            for (int32_t step = (int32_t)(width / 2); step; step /= 2)
                for (int64_t j = 0; j < m; ++j) idx[j] += (cuts[idx[j] + step] < xs[j]) ? step : 0;
            uint8_t *o = out + f * n + a;
            for (int64_t j = 0; j < m; ++j) o[j] = isnan(xs[j]) ? (uint8_t)missing : (uint8_t)(idx[j] + 1);
        }
    }
    return overflow;
}

/*
 * One level down for rows [i0, i1): slot[i] = table[slot[i] * nb + XT[column[slot[i]], i]].
 * slot, column and table are int32 (residuals_route32) or int64 (residuals_route64).
 */
#define RESIDUALS_ROUTE(NAME, T)                                                                    \
    RESIDUALS_EXPORT void NAME(const uint8_t *XT, int64_t n, T *slot, const T *column,              \
                               const T *table, int64_t nb, int64_t i0, int64_t i1)                  \
    {                                                                                               \
        for (int64_t i = i0; i < i1; ++i) {                                                         \
            const int64_t s = (int64_t)slot[i];                                                     \
            slot[i] = table[s * nb + (int64_t)XT[(int64_t)column[s] * n + i]];                      \
        }                                                                                           \
    }
RESIDUALS_ROUTE(residuals_route32, int32_t)
RESIDUALS_ROUTE(residuals_route64, int64_t)

/* out[i] = table[slot[i]] for i in [i0, i1): the training rows' leaves (int64). */
#define RESIDUALS_TAKE(NAME, T)                                                                     \
    RESIDUALS_EXPORT void NAME(const int64_t *table, const T *slot, int64_t *out, int64_t i0,      \
                               int64_t i1)                                                          \
    {                                                                                               \
        for (int64_t i = i0; i < i1; ++i) out[i] = table[slot[i]];                                  \
    }
RESIDUALS_TAKE(residuals_take32, int32_t)
RESIDUALS_TAKE(residuals_take64, int64_t)

/* The scores of one feature's c cuts (see residuals_best_splits), in loops
 * without branches that the compiler vectorises. */
static void score_hessian_floor(const double *RESTRICT cg, const double *RESTRICT ch, double ag, double ah,
                                double G, double H, double h_floor, double *RESTRICT out, int64_t c)
{
    for (int64_t t = 0; t < c; ++t) {
        const double GL = cg[t] + ag, HL = ch[t] + ah, GR = G - GL, HR = H - HL;
        const double score = (GL * GL) / HL + (GR * GR) / HR;
        out[t] = ((HL >= h_floor) & (HR >= h_floor)) ? score : -INFINITY;
    }
}

static void score_counts(const double *RESTRICT cg, const double *RESTRICT ch, const double *RESTRICT cc,
                         const double *RESTRICT cv, double ag, double ah, double ac, double aw, double G, double H,
                         double C, double W, double min_count, double min_weight, double *RESTRICT out, int64_t c)
{
    const double wmin = min_weight > 0 ? min_weight : -INFINITY;
    for (int64_t t = 0; t < c; ++t) {
        const double GL = cg[t] + ag, HL = ch[t] + ah, CL = cc[t] + ac, WL = cv[t] + aw;
        const double GR = G - GL, HR = H - HL, CR = C - CL, WR = W - WL;
        const double score = (GL * GL) / HL + (GR * GR) / HR;
        const int ok = (CL >= min_count) & (CR >= min_count) & (HL > 0) & (HR > 0) & (WL >= wmin) & (WR >= wmin);
        out[t] = ok ? score : -INFINITY;
    }
}

/*
 * The split search of a level (what HistTree._find_splits does in torch, for
 * K nodes at once): for each node, every candidate split (direction d of the
 * missing bin, feature f, cut t: bins <= t go left) is scored
 *
 *     score = GL*GL/HL + GR*GR/HR      (-inf when the split is not allowed)
 *
 * with GL, HL the cumulative sums of the node's histogram up to bin t (plus
 * the missing bin when d == 1, NaN going left) and GR = G - GL, HR = H - HL,
 * G and H the node's sums as the feature sees them (value bins, then the
 * missing bin). The sums are accumulated bin by bin, in order, as torch's
 * cumsum does, so the scores are bit-identical to torch's.
 *
 * Allowed: min(HL, HR) >= h_floor when cw is NULL; else min(count_L,
 * count_R) >= min_count, min(HL, HR) > 0 and, if min_weight > 0,
 * min(weight_L, weight_R) >= min_weight.
 *
 * The winner is the best score, ties (scores >= best * (1 - tie_tol)) going
 * to the first candidate in the tie-break order: d ascending, then the
 * features in `order` (or 0, 1, ... when NULL), then t ascending. Output per
 * node, rows[k, :13], what HistTree._split_rows makes of the winner in numpy:
 * accept, gain (best - G*G/H of the node, from totals[k, :4] = G, H, count,
 * weight), feature, cut t, missing_left, the left sums (G, H, count,
 * weight; counts and weights read off H via count_unit, weight_unit,
 * hess_unit when cw is NULL) and the right ones (totals - left). Accepted:
 * a finite gain > rel_gain_tol * |best| and, if min_gain >= 0, >= min_gain.
 * uncentred[k] = 1 when the bin after the cut is empty, the only case where
 * HistTree._centred_cuts moves the cut.
 *
 * gh, cw: (K, F, nb) complex128 histograms as doubles (real, imag) pairs, cw
 * NULL when counts are read off H; scratch: (D * F + 4) * (nb - 1) doubles. Nodes
 * [k0, k1) only: the caller splits [0, K) between threads, each with its scratch.
 */
RESIDUALS_EXPORT void residuals_best_splits(const double *gh, const double *cw, int64_t K, int64_t F,
                                            int64_t nb, int64_t D, const int64_t *order, double h_floor,
                                            double min_count, double min_weight, double tie_tol,
                                            const double *totals, double count_unit, double weight_unit,
                                            double hess_unit, double rel_gain_tol, double min_gain,
                                            double *scratch, double *rows, int8_t *uncentred,
                                            int64_t k0, int64_t k1)
{
    const int64_t c = nb - 1;
    /* the cumulative sums of one feature: after the D * F * c scores in scratch */
    double *const cum = scratch + D * F * c;
    double *const cg = cum, *const ch = cum + c, *const cc = cum + 2 * c, *const cv = cum + 3 * c;
    (void)K;
    for (int64_t k = k0; k < k1; ++k) {
        for (int64_t f = 0; f < F; ++f) {
            const double *h = gh + ((k * F + f) * nb) * 2;
            const double *w = cw ? cw + ((k * F + f) * nb) * 2 : NULL;
            /* sums over the value bins 0..t, bin by bin (torch's cumsum order) */
            double sg = 0.0, sh = 0.0, sc = 0.0, sw = 0.0;
            for (int64_t t = 0; t < c; ++t) {
                cg[t] = sg += h[2 * t];
                ch[t] = sh += h[2 * t + 1];
            }
            if (w) {
                for (int64_t t = 0; t < c; ++t) {
                    cc[t] = sc += w[2 * t];
                    cv[t] = sw += w[2 * t + 1];
                }
            }
            /* the node's sums as this feature sees them: value bins, then the missing bin */
            const double mg = h[2 * c], mh = h[2 * c + 1], mc = w ? w[2 * c] : 0.0, mw = w ? w[2 * c + 1] : 0.0;
            const double G = sg + mg, H = sh + mh, C = sc + mc, W = sw + mw;
            for (int64_t d = 0; d < D; ++d) {
                double *const out = scratch + (d * F + f) * c;
                /* d == 1: the missing bin goes left (adding 0.0 for d == 0 can only turn a -0.0
                 * into +0.0, which squaring erases: the scores are the same bits) */
                const double ag = d ? mg : 0.0, ah = d ? mh : 0.0, ac = d ? mc : 0.0, aw = d ? mw : 0.0;
                if (!w)
                    score_hessian_floor(cg, ch, ag, ah, G, H, h_floor, out, c);
                else
                    score_counts(cg, ch, cc, cv, ag, ah, ac, aw, G, H, C, W, min_count, min_weight, out, c);
            }
        }
        double top = -INFINITY;
        for (int64_t i = 0; i < D * F * c; ++i)
            if (scratch[i] > top) top = scratch[i];
        /* the first candidate in the tie-break order within tie_tol of the best */
        const double threshold = top * (1 - tie_tol);
        int64_t win = -1, wd = 0, wf = 0, wt = 0;
        for (int64_t d = 0; d < D && win < 0; ++d) {
            for (int64_t j = 0; j < F && win < 0; ++j) {
                const int64_t f = order ? order[j] : j;
                const double *row = scratch + (d * F + f) * c;
                for (int64_t t = 0; t < c; ++t) {
                    if (row[t] >= threshold) {
                        win = (d * F + f) * c + t;
                        wd = d;
                        wf = f;
                        wt = t;
                        break;
                    }
                }
            }
        }
        /* the winner's left sums, accumulated as above */
        const double *h = gh + ((k * F + wf) * nb) * 2;
        const double *w = cw ? cw + ((k * F + wf) * nb) * 2 : NULL;
        double L[4] = {0.0, 0.0, 0.0, 0.0};
        for (int64_t t = 0; t <= wt; ++t) {
            L[0] += h[2 * t];
            L[1] += h[2 * t + 1];
            if (w) {
                L[2] += w[2 * t];
                L[3] += w[2 * t + 1];
            }
        }
        if (wd == 1) {
            L[0] += h[2 * c];
            L[1] += h[2 * c + 1];
            if (w) {
                L[2] += w[2 * c];
                L[3] += w[2 * c + 1];
            }
        }
        if (!w) { /* counts and weights read off the hessian sums */
            L[2] = rint(L[1] / count_unit);
            L[3] = weight_unit > 0 ? L[2] * weight_unit : L[1] / hess_unit;
        }
        /* the host row (HistTree._split_rows): accept, gain, feature, bin, missing_left, left[4], right[4] */
        double *out = rows + k * 13;
        const double *tot = totals + k * 4;
        const double parent = tot[1] > 0 ? (tot[0] * tot[0]) / tot[1] : 0.0;
        const double gain = top - parent;
        int accept = isfinite(gain) && gain > rel_gain_tol * fabs(top);
        if (min_gain >= 0) accept = accept && gain >= min_gain;
        for (int i = 0; i < 4; ++i) {
            out[5 + i] = L[i];
            out[9 + i] = tot[i] - L[i];
        }
        /* with no NaN in the node, unseen NaNs follow the larger child */
        int missing_left = out[5 + 2] >= out[9 + 2];
        /* the rows (hessian or count) in each bin of the winning feature */
        const double *mass = w ? w : h + 1; /* mass[2 * b] */
        if (D == 2 && mass[2 * c] > 0) missing_left = wd == 1;
        out[0] = accept;
        out[1] = gain;
        out[2] = (double)wf;
        out[3] = (double)wt;
        out[4] = missing_left;
        /* HistTree._centred_cuts has work to do only if the bin after the cut is empty */
        const int64_t next = wt + 1 < c - 1 ? wt + 1 : c - 1;
        uncentred[k] = !(mass[2 * next] > 0);
    }
}

/* A real (empty) module, so that setuptools can build this file as an
 * extension and Python could import it; the functions are called via ctypes. */
static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT, "_kernels_c",
    "C loops of hist mode, called through ctypes by residuals.boosting._kernels.", -1, NULL,
};

PyMODINIT_FUNC PyInit__kernels_c(void) { return PyModule_Create(&kernels_module); }
