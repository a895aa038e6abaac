/* out = sum over rows r of c[r] * row_r, for bfloat16 rows and out, float32 coefficients and sums:
 * the CPU's merge kernel for bfloat16 pools (recycler/native_sum.py builds and calls it).
 *
 * Why not torch.compile's kernel: it reads every row at once, 64 bytes of each in turn, and from
 * memory that runs well below the rate of reading the same rows one after another. Here the rows
 * are read 4 at a time over blocks of `block` words (256 KB of each row; recycler/native_sum.py's
 * BLOCK_WORDS) whose float32 sums (512 KB) stay in a core's L2 cache where it holds 1 MB.
 *
 * Each 32-bit word holds two bfloat16 (the even element in its low half): a shift gives the even
 * element as float32 and a mask the odd one, so the loops are plain lane-wise arithmetic that the
 * compiler vectorizes. Products and sums are formed in the same order as torch's
 * (row 0 times c[0], then + row k times c[k] for k = 1, 2, ...), without fused multiply-adds, and
 * rounded to bfloat16 as torch rounds on a CPU (to nearest even; NaN to the bits torch writes on this
 * CPU, `nan_bits`: 0xffff from its vectorized conversion, 0x7fc0 from its scalar one): the same bits. Rows may
 * start at any even address: words are read with memcpy. */
#include <stdint.h>
#include <string.h>

#define GROUP 4

static inline float even_half(uint32_t word) { uint32_t bits = word << 16; float f; memcpy(&f, &bits, 4); return f; }
static inline float odd_half(uint32_t word) { uint32_t bits = word & 0xffff0000u; float f; memcpy(&f, &bits, 4); return f; }
static inline uint32_t word_at(const unsigned char *row, int64_t i) { uint32_t w; memcpy(&w, row + 4 * i, 4); return w; }

static inline uint32_t to_bfloat16(float f, uint32_t nan_bits) {
  uint32_t u; memcpy(&u, &f, 4);
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return ((u & 0x7fffffffu) > 0x7f800000u) ? nan_bits : rounded;
}

/* Adds g rows (g a constant once inlined, so the row loop unrolls) into the block's sums; the
 * first group of a block starts the sums from row 0's product. */
static inline __attribute__((always_inline)) void add_rows(float *restrict even, float *restrict odd,
    const unsigned char *const *rows, const float *c, const int g, const int first, int64_t start, int64_t count) {
  for (int64_t i = 0; i < count; i++) {
    float e, o;
    int k = 0;
    if (first) {
      uint32_t w = word_at(rows[0], start + i);
      e = even_half(w) * c[0];
      o = odd_half(w) * c[0];
      k = 1;
    } else {
      e = even[i];
      o = odd[i];
    }
    for (; k < g; k++) {
      uint32_t w = word_at(rows[k], start + i);
      e = e + even_half(w) * c[k];
      o = o + odd_half(w) * c[k];
    }
    even[i] = e;
    odd[i] = o;
  }
}

/* Words [start, start + words) of out (pairs of elements), `block` words at a time; `even` and
 * `odd` hold `block` floats each (this thread's). */
void weighted_sum_bf16(unsigned char *out, const float *c, const unsigned char *const *rows, int n,
                       int64_t start, int64_t words, float *restrict even, float *restrict odd, int64_t block,
                       uint16_t nan_bits) {
  for (int64_t s = start; s < start + words; s += block) {
    int64_t count = (start + words - s < block) ? start + words - s : block;
    for (int r = 0; r < n; r += GROUP) {
      int g = (n - r < GROUP) ? n - r : GROUP;
      switch (2 * g + (r == 0)) {
        case 2: add_rows(even, odd, rows + r, c + r, 1, 0, s, count); break;
        case 3: add_rows(even, odd, rows + r, c + r, 1, 1, s, count); break;
        case 4: add_rows(even, odd, rows + r, c + r, 2, 0, s, count); break;
        case 5: add_rows(even, odd, rows + r, c + r, 2, 1, s, count); break;
        case 6: add_rows(even, odd, rows + r, c + r, 3, 0, s, count); break;
        case 7: add_rows(even, odd, rows + r, c + r, 3, 1, s, count); break;
        case 8: add_rows(even, odd, rows + r, c + r, 4, 0, s, count); break;
        case 9: add_rows(even, odd, rows + r, c + r, 4, 1, s, count); break;
      }
    }
    for (int64_t i = 0; i < count; i++) {
      uint32_t w = to_bfloat16(even[i], nan_bits) | (to_bfloat16(odd[i], nan_bits) << 16);
      memcpy(out + 4 * (s + i), &w, 4);
    }
  }
}

/* Element `index` alone (the last of an odd count). */
void weighted_sum_bf16_element(unsigned char *out, const float *c, const unsigned char *const *rows, int n, int64_t index,
                                uint16_t nan_bits) {
  uint16_t half;
  memcpy(&half, rows[0] + 2 * index, 2);
  float sum = even_half(half) * c[0];
  for (int k = 1; k < n; k++) {
    memcpy(&half, rows[k] + 2 * index, 2);
    sum = sum + even_half(half) * c[k];
  }
  half = (uint16_t)to_bfloat16(sum, nan_bits);
  memcpy(out + 2 * index, &half, 2);
}
