/* XGBoost's CPU prediction for a dense float32 matrix, 16 rows per AVX-512 vector.
 *
 * Compiled once per machine by ml/nativelib.py and called from ml/forestkernel.py, which
 * lays the trees out and checks the result against XGBoost's own, bit for bit, before use.
 *
 * Layout: every tree is padded to a complete tree of depth D. Tree t's internal nodes sit at
 * [t * (2^D - 1), (t + 1) * (2^D - 1)) in level order (node i's children are 2i+1 and 2i+2),
 * its leaves at [t * 2^D, (t + 1) * 2^D). A node's feature code is its feature's column, with
 * the sign bit set where a missing value goes left (its default side). Below a leaf shallower than D, every padded node
 * leads to a copy of that leaf's value, so whichever way a row goes there, it lands on it.
 * The arrays carry at least 32 spare entries at their ends (whole-level loads read past small
 * trees).
 *
 * Semantics, as XGBoost's predictor: a row goes left when x < split (float32), to the node's
 * default side when x is NaN; the sum starts at the base margin and adds each tree's leaf in
 * tree order, in float32.
 */
#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ML_X86_VECTORS 1
#endif

#define LANES 16
#define VECS 4 /* vectors walked side by side, to hide the gathers' latency */
#define BLOCK (LANES * VECS)

#define FEATURE_MASK 0x7fffffff

static float walk_row(const float *x, int32_t trees, int32_t depth, const int32_t *feature,
                      const float *split, const float *leaf, float base) {
  const int64_t inner = ((int64_t)1 << depth) - 1, leaves = (int64_t)1 << depth;
  float acc = base;
  for (int64_t t = 0; t < trees; t++) {
    const int32_t *f = feature + t * inner;
    const float *s = split + t * inner;
    int64_t i = 0;
    for (int32_t k = 0; k < depth; k++) {
      const int32_t code = f[i];
      const float v = x[code & FEATURE_MASK];
      const int right = isnan(v) ? code >= 0 : !(v < s[i]);
      i = 2 * i + 1 + right;
    }
    acc += leaf[t * leaves + (i - inner)];
  }
  return acc;
}

#ifdef ML_X86_VECTORS
__attribute__((target("avx512f"))) static inline __mmask16 sign_bits(__m512i v) {
  return _mm512_cmplt_epi32_mask(v, _mm512_setzero_si512());
}

/* BLOCK rows starting at x (row r at x + r * stride). */
__attribute__((target("avx512f"))) static void walk_block(const float *x, int64_t stride,
                                                         int32_t trees, int32_t depth,
                                                         const int32_t *feature,
                                                         const float *split, const float *leaf,
                                                         float base, float *out) {
  const int64_t inner = ((int64_t)1 << depth) - 1, leaves = (int64_t)1 << depth;
  const __m512i row = _mm512_mullo_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
      _mm512_set1_epi32((int32_t)stride));
  const __m512i one = _mm512_set1_epi32(1);
  __m512 acc[VECS];
  for (int v = 0; v < VECS; v++) acc[v] = _mm512_set1_ps(base);
  for (int64_t t = 0; t < trees; t++) {
    const int32_t *f = feature + t * inner;
    const float *s = split + t * inner;
    __m512i at[VECS]; /* each lane's node within the current level */
    for (int v = 0; v < VECS; v++) at[v] = _mm512_setzero_si512();
    for (int32_t k = 0; k < depth; k++) {
      const int64_t first = ((int64_t)1 << k) - 1;
      __m512i fk[VECS];
      __m512 sk[VECS];
      if (k <= 4) { /* up to 16 nodes: the level sits in one register */
        const __m512i fl = _mm512_loadu_si512(f + first);
        const __m512 sl = _mm512_loadu_ps(s + first);
        for (int v = 0; v < VECS; v++) {
          fk[v] = _mm512_permutexvar_epi32(at[v], fl);
          sk[v] = _mm512_permutexvar_ps(at[v], sl);
        }
      } else if (k == 5) { /* 32 nodes: two registers */
        const __m512i fl = _mm512_loadu_si512(f + first), fh = _mm512_loadu_si512(f + first + 16);
        const __m512 sl = _mm512_loadu_ps(s + first), sh = _mm512_loadu_ps(s + first + 16);
        for (int v = 0; v < VECS; v++) {
          fk[v] = _mm512_permutex2var_epi32(fl, at[v], fh);
          sk[v] = _mm512_permutex2var_ps(sl, at[v], sh);
        }
      } else {
        for (int v = 0; v < VECS; v++) {
          fk[v] = _mm512_i32gather_epi32(at[v], f + first, 4);
          sk[v] = _mm512_i32gather_ps(at[v], s + first, 4);
        }
      }
      for (int v = 0; v < VECS; v++) {
        const __m512i column = _mm512_and_si512(fk[v], _mm512_set1_epi32(FEATURE_MASK));
        const __m512 xv =
            _mm512_i32gather_ps(_mm512_add_epi32(row, column), x + v * LANES * stride, 4);
        /* !(x < split), true for NaN too; NaN at a default-left node (sign bit set) goes left */
        const __mmask16 nan_left = _mm512_mask_cmp_ps_mask(
            sign_bits(fk[v]), xv, xv, _CMP_UNORD_Q);
        const __mmask16 right =
            _mm512_kandn(nan_left, _mm512_cmp_ps_mask(xv, sk[v], _CMP_NLT_UQ));
        const __m512i twice = _mm512_add_epi32(at[v], at[v]);
        at[v] = _mm512_mask_add_epi32(twice, right, twice, one);
      }
    }
    const float *l = leaf + t * leaves;
    for (int v = 0; v < VECS; v++) {
      __m512 value;
      if (depth <= 4) {
        value = _mm512_permutexvar_ps(at[v], _mm512_loadu_ps(l));
      } else if (depth == 5) {
        value = _mm512_permutex2var_ps(_mm512_loadu_ps(l), at[v], _mm512_loadu_ps(l + 16));
      } else if (depth == 6) {
        const __m512 lo = _mm512_permutex2var_ps(_mm512_loadu_ps(l), at[v], _mm512_loadu_ps(l + 16));
        const __m512 hi =
            _mm512_permutex2var_ps(_mm512_loadu_ps(l + 32), at[v], _mm512_loadu_ps(l + 48));
        value = _mm512_mask_blend_ps(_mm512_test_epi32_mask(at[v], _mm512_set1_epi32(32)), lo, hi);
      } else {
        value = _mm512_i32gather_ps(at[v], l, 4);
      }
      acc[v] = _mm512_add_ps(acc[v], value);
    }
  }
  for (int v = 0; v < VECS; v++) _mm512_storeu_ps(out + v * LANES, acc[v]);
}
#endif

/* 1 when this CPU runs the vector walk (AVX-512F); otherwise callers keep XGBoost's own. */
int32_t forest_vector_walk(void) {
#ifdef ML_X86_VECTORS
  static int32_t supported = -1;
  if (supported < 0) {
    __builtin_cpu_init();
    supported = __builtin_cpu_supports("avx512f") ? 1 : 0;
  }
  return supported;
#else
  return 0;
#endif
}

/* The margin of each of n rows (row r at x + r * stride) into out; `vector` 0 walks every row
   alone (as the last n % 64 rows are). */
void forest_margin(const float *x, int64_t n, int64_t stride, int32_t trees, int32_t depth,
                   const int32_t *feature, const float *split, const float *leaf, float base,
                   float *out, int32_t vector) {
  int64_t r = 0;
#ifdef ML_X86_VECTORS
  if (vector && forest_vector_walk()) {
    for (; r + BLOCK <= n; r += BLOCK)
      walk_block(x + r * stride, stride, trees, depth, feature, split, leaf, base, out + r);
  }
#else
  (void)vector;
#endif
  for (; r < n; r++) out[r] = walk_row(x + r * stride, trees, depth, feature, split, leaf, base);
}

/* XGBoost's float32 sigmoid (common::Sigmoid), in place. */
void forest_sigmoid(float *values, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float m = -values[i];
    if (m > 88.7f) m = 88.7f;
    const float denominator = (expf(m) + 1.0f) + 1e-16f;
    values[i] = 1.0f / denominator;
  }
}
