/*
 * The two hot loops of hist mode on the CPU, in C: histogram building and row
 * routing. See residuals/boosting/_kernels.py, which loads this library with
 * ctypes (it is built as an optional extension module: when no C compiler is
 * at hand the package installs without it and hist mode runs the same
 * arithmetic in torch).
 *
 * Both loops do exactly what their torch versions in _hist.py do, in the same
 * order: every histogram cell adds its rows in row order, as torch's CPU
 * scatter_add_ does, so the two give bit-identical sums (tested).
 *
 * Layouts: XT is (F, n) uint8 bins, feature-major (row i of feature f at
 * XT[f * n + i]). Values are k doubles per row (k = 1: one real value; k = 2:
 * a complex128 w*g + 1j*w*h, stored as its real and imaginary parts).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if defined(_WIN32)
#define RESIDUALS_EXPORT __declspec(dllexport)
#else
#define RESIDUALS_EXPORT __attribute__((visibility("default")))
#endif

/*
 * out[f, (node_i * nb + XT[f, r_i]) * k + c] += v[i * k + c]
 *
 * for f in [f0, f1), i in [0, m), c in [0, k): r_i = rows[i] (or i when rows
 * is NULL), node_i = nodes[i] (or 0 when nodes is NULL). v holds the m rows'
 * values in that order (gathered by the caller: once per call, not once per
 * feature). out is (F, n_cols * k) doubles. The caller splits [0, F) between
 * threads: features write disjoint parts of out.
 */
RESIDUALS_EXPORT void residuals_hist(const uint8_t *XT, int64_t n, const double *v, int64_t k,
                                     const int64_t *rows, const int64_t *nodes, int64_t m,
                                     int64_t nb, int64_t n_cols, double *out, int64_t f0, int64_t f1)
{
    for (int64_t f = f0; f < f1; ++f) {
        const uint8_t *x = XT + f * n;
        double *o = out + f * n_cols * k;
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
                    const int64_t b = 2 * (nodes[i] * nb + (int64_t)x[rows[i]]);
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
                for (int64_t i = 0; i < m; ++i) o[nodes[i] * nb + (int64_t)x[rows[i]]] += v[i];
            }
        }
    }
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

/* A real (empty) module, so that setuptools can build this file as an
 * extension and Python could import it; the functions are called via ctypes. */
static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT, "_kernels_c",
    "C loops of hist mode, called through ctypes by residuals.boosting._kernels.", -1, NULL,
};

PyMODINIT_FUNC PyInit__kernels_c(void) { return PyModule_Create(&kernels_module); }
