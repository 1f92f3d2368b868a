// Spectral products of Spherical CNNs: the Fourier-space form of the S^2 and
// SO(3) correlations, per degree and summed over input channels.
//
// Spherical CNNs (Cohen, Geiger, Koehler & Welling, 2018, "Spherical CNNs",
// arXiv:1801.10130), Eq. 23 and Appendix D (Fig. 2). The SO(3) transform of
// the correlation of S^2 signals is the outer product of their spectra, and
// of SO(3) signals the block matrix product fhat psihat^dagger:
//
//   TfcvS2Mm:  z[b, o, p(l,m,n)] = sum_c x[b, c, (l,m)] conj(y[c, o, (l,n)])
//   TfcvSo3Mm: z[b, o, p(l,m,n)] = sum_c sum_k x[b, c, p(l,m,k)]
//                                              conj(y[c, o, p(l,n,k)])
//
// Layouts (spectral axis last): S^2 spectra [.., b^2] with (l, m) at
// l^2 + l + m; SO(3) spectra [.., P(b)], P(b) = b(4b^2-1)/3, with (l, m, n)
// at p(l,m,n) = l(4l^2-1)/3 + (m+l)(2l+1) + (n+l), i.e. degree l is a
// row-major (2l+1) x (2l+1) block.
//
// Per degree, both products are ONE matrix product over (channel, k):
// [(b, m), (c, k)] x [(o, n), (c, k)]^H -> [(b, m), (o, n)], run as a real
// product of twice the size on gathered operands and scattered into the
// packed output. Degrees are split into row/column blocks that the CPU
// worker threads take largest first. For float the product uses an AVX2 +
// FMA kernel when the CPU has one (checked at run time), else Eigen.
// Gradients are registered in Python
// (tfcv_ops/spherical_kernels.py).

#include <algorithm>
#include <atomic>
#include <complex>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfcv {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

int64_t So3PackedSize(int64_t bandwidth) {
  return bandwidth * (4 * bandwidth * bandwidth - 1) / 3;
}

int64_t DegreeOffset(int64_t l) { return l * (4 * l * l - 1) / 3; }

// The b with packed_size(b) == size, or -1 when there is none.
int64_t BandwidthOf(int64_t size, bool so3) {
  int64_t bandwidth = 0;
  auto packed = [so3](int64_t b) { return so3 ? So3PackedSize(b) : b * b; };
  while (packed(bandwidth) < size) ++bandwidth;
  return packed(bandwidth) == size ? bandwidth : -1;
}

absl::Status InvalidArgument(const std::string& op, const std::string& text) {
  return absl::InvalidArgumentError(op + ": " + text);
}

std::string PackedRule(bool so3) {
  return so3 ? "a packed SO(3) size P(b) = b(4b^2-1)/3 (1, 10, 35, 84, ...)"
             : "a packed S^2 size b^2 (a perfect square)";
}

// Checks x [B, C_in, S] and y [C_in, C_out, S]; the dims may be -1
// (unknown) in shape inference. Returns the bandwidth in *bandwidth.
absl::Status CheckOperands(const std::string& op, bool so3,
                           const std::string& x_shape,
                           const std::string& y_shape, int64_t x_channels,
                           int64_t x_size, int64_t y_channels, int64_t y_size,
                           int64_t* bandwidth) {
  *bandwidth = -1;
  if (x_channels >= 0 && y_channels >= 0 && x_channels != y_channels) {
    return InvalidArgument(
        op, "x's input channels (dimension 1) and y's (dimension 0) must "
                "match, received x shape " +
                x_shape + " and y shape " + y_shape + ".");
  }
  if (x_size >= 0 && y_size >= 0 && x_size != y_size) {
    return InvalidArgument(
        op, "x and y must have the same spectrum size (last dimension), "
                "received x shape " +
                x_shape + " and y shape " + y_shape + ".");
  }
  const int64_t size = std::max(x_size, y_size);
  if (size >= 0) {
    *bandwidth = BandwidthOf(size, so3);
    if (*bandwidth < 0) {
      return InvalidArgument(op, "the spectrum size (last dimension) must be " +
                                     PackedRule(so3) + ", received x shape " +
                                     x_shape + ".");
    }
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------ real GEMM ---
//
// Per degree l both products are one complex matrix product
// Z = X conj(Y)^T with X [(b, m), (c, k)], Y [(o, n), (c, k)] (S^2: no k).
// It runs as a real product of twice the size, with complex numbers kept as
// (re, im) pairs: row 2i of A is (re, im) of X row i, row 2i+1 is
// (im, -re); row 2kk of B is re Y[:, kk], row 2kk+1 is im Y[:, kk]. Then
// (A B)[2i, j] = re Z[i, j] and (A B)[2i+1, j] = im Z[i, j].

template <typename Real>
using RealRowMatrix =
    Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// C [m, n] = A [m, k] B [k, n], all row-major and contiguous (Eigen).
template <typename Real>
void GemmPortable(int64_t m, int64_t n, int64_t k, const Real* a,
                  const Real* b, Real* c) {
  Eigen::Map<const RealRowMatrix<Real>> left(a, m, k);
  Eigen::Map<const RealRowMatrix<Real>> right(b, k, n);
  Eigen::Map<RealRowMatrix<Real>> result(c, m, n);
  result.noalias() = left * right;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define TFCV_MM_AVX2 1

// An AVX2 + FMA float kernel, compiled for that target only and chosen at
// run time (the library itself targets any x86-64). Packing: A in panels
// of kRows rows [k][kRows], B in panels of kCols columns [k][kCols].
constexpr int64_t kRows = 6;
constexpr int64_t kCols = 16;
constexpr int64_t kDepthBlock = 256;
constexpr int64_t kRowBlock = 72;  // a multiple of kRows

bool HasAvx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

// C[r, 0:kCols] += (A panel [depth][kRows] x B panel [depth][kCols])[r]
// for rows r < kRows, C row-major with leading dimension ldc.
__attribute__((target("avx2,fma"))) void MicroKernelAvx2(
    int64_t depth, const float* a, const float* b, float* c, int64_t ldc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int64_t p = 0; p < depth; ++p, a += kRows, b += kCols) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = _mm256_loadu_ps(b + 8);
    __m256 v = _mm256_broadcast_ss(a);
    c00 = _mm256_fmadd_ps(v, b0, c00);
    c01 = _mm256_fmadd_ps(v, b1, c01);
    v = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(v, b0, c10);
    c11 = _mm256_fmadd_ps(v, b1, c11);
    v = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(v, b0, c20);
    c21 = _mm256_fmadd_ps(v, b1, c21);
    v = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(v, b0, c30);
    c31 = _mm256_fmadd_ps(v, b1, c31);
    v = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(v, b0, c40);
    c41 = _mm256_fmadd_ps(v, b1, c41);
    v = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(v, b0, c50);
    c51 = _mm256_fmadd_ps(v, b1, c51);
  }
#define TFCV_ADD_ROW(r, lo, hi)                                              \
  _mm256_storeu_ps(c + r * ldc, _mm256_add_ps(_mm256_loadu_ps(c + r * ldc), \
                                              lo));                          \
  _mm256_storeu_ps(c + r * ldc + 8,                                          \
                   _mm256_add_ps(_mm256_loadu_ps(c + r * ldc + 8), hi))
  TFCV_ADD_ROW(0, c00, c01);
  TFCV_ADD_ROW(1, c10, c11);
  TFCV_ADD_ROW(2, c20, c21);
  TFCV_ADD_ROW(3, c30, c31);
  TFCV_ADD_ROW(4, c40, c41);
  TFCV_ADD_ROW(5, c50, c51);
#undef TFCV_ADD_ROW
}

// C [m, n] = A [m, k] B [k, n] (row-major, contiguous) with the AVX2
// kernel; `packed` holds at least PackedFloats(n) floats.
int64_t PackedFloats(int64_t n) {
  const int64_t panels = (n + kCols - 1) / kCols;
  return kDepthBlock * (kRowBlock + panels * kCols);
}

void GemmAvx2(int64_t m, int64_t n, int64_t k, const float* a,
              const float* b, float* c, float* packed) {
  std::fill(c, c + m * n, 0.0f);
  const int64_t col_panels = (n + kCols - 1) / kCols;
  float* packed_a = packed;
  float* packed_b = packed + kDepthBlock * kRowBlock;
  float tile[kRows * kCols];
  for (int64_t p0 = 0; p0 < k; p0 += kDepthBlock) {
    const int64_t depth = std::min(kDepthBlock, k - p0);
    // B panels [panel][depth][kCols], zero past column n.
    for (int64_t panel = 0; panel < col_panels; ++panel) {
      float* out = packed_b + panel * depth * kCols;
      const int64_t j0 = panel * kCols;
      const int64_t width = std::min(kCols, n - j0);
      for (int64_t p = 0; p < depth; ++p) {
        const float* row = b + (p0 + p) * n + j0;
        int64_t j = 0;
        for (; j < width; ++j) out[p * kCols + j] = row[j];
        for (; j < kCols; ++j) out[p * kCols + j] = 0.0f;
      }
    }
    for (int64_t i0 = 0; i0 < m; i0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, m - i0);
      const int64_t row_panels = (rows + kRows - 1) / kRows;
      // A panels [panel][depth][kRows], zero past row m.
      for (int64_t panel = 0; panel < row_panels; ++panel) {
        float* out = packed_a + panel * depth * kRows;
        for (int64_t r = 0; r < kRows; ++r) {
          const int64_t i = i0 + panel * kRows + r;
          if (i >= m) {
            for (int64_t p = 0; p < depth; ++p) out[p * kRows + r] = 0.0f;
            continue;
          }
          const float* row = a + i * k + p0;
          for (int64_t p = 0; p < depth; ++p) out[p * kRows + r] = row[p];
        }
      }
      for (int64_t cp = 0; cp < col_panels; ++cp) {
        const int64_t j0 = cp * kCols;
        const int64_t width = std::min(kCols, n - j0);
        for (int64_t rp = 0; rp < row_panels; ++rp) {
          const int64_t first = i0 + rp * kRows;
          const int64_t height = std::min(kRows, m - first);
          const float* panel_a = packed_a + rp * depth * kRows;
          const float* panel_b = packed_b + cp * depth * kCols;
          if (height == kRows && width == kCols) {
            MicroKernelAvx2(depth, panel_a, panel_b, c + first * n + j0, n);
            continue;
          }
          std::fill(tile, tile + kRows * kCols, 0.0f);
          MicroKernelAvx2(depth, panel_a, panel_b, tile, kCols);
          for (int64_t r = 0; r < height; ++r) {
            float* target = c + (first + r) * n + j0;
            for (int64_t j = 0; j < width; ++j) {
              target[j] += tile[r * kCols + j];
            }
          }
        }
      }
    }
  }
}
#endif  // x86-64 with GCC or Clang

// C [m, n] = A [m, k] B [k, n]; `packed` is scratch for the AVX2 kernel.
template <typename Real>
void RealProduct(int64_t m, int64_t n, int64_t k, const Real* a,
                 const Real* b, Real* c, std::vector<Real>* packed) {
#ifdef TFCV_MM_AVX2
  if constexpr (std::is_same<Real, float>::value) {
    if (HasAvx2()) {
      packed->resize(PackedFloats(n));
      GemmAvx2(m, n, k, a, b, c, packed->data());
      return;
    }
  }
#endif
  GemmPortable<Real>(m, n, k, a, b, c);
}

// One GEMM task: degree l, complex rows [row_begin, row_end) of X (rows
// (b, m)) and columns [col_begin, col_end) of Z (columns (o, n)).
struct MmTask {
  int64_t degree, row_begin, row_end, col_begin, col_end, cost;
};

template <typename Real>
class SphericalMmOp : public OpKernel {
 public:
  using Complex = std::complex<Real>;

  SphericalMmOp(OpKernelConstruction* context, bool so3)
      : OpKernel(context), so3_(so3) {}

  void Compute(OpKernelContext* context) override {
    const std::string op = so3_ ? "TfcvSo3Mm" : "TfcvS2Mm";
    const Tensor& x = context->input(0);
    const Tensor& y = context->input(1);
    const std::string rule = so3_ ? "P(b)" : "b^2";
    OP_REQUIRES(context, x.dims() == 3,
                InvalidArgument(op, "x must be 3-D [B, C_in, " + rule +
                                        "], received shape " +
                                        x.shape().DebugString() + "."));
    OP_REQUIRES(context, y.dims() == 3,
                InvalidArgument(op, "y must be 3-D [C_in, C_out, " + rule +
                                        "], received shape " +
                                        y.shape().DebugString() + "."));
    int64_t bandwidth;
    OP_REQUIRES_OK(context,
                   CheckOperands(op, so3_, x.shape().DebugString(),
                                 y.shape().DebugString(), x.dim_size(1),
                                 x.dim_size(2), y.dim_size(0), y.dim_size(2),
                                 &bandwidth));

    const int64_t batch = x.dim_size(0);
    const int64_t channels = x.dim_size(1);
    const int64_t outputs = y.dim_size(1);
    const int64_t in_size = x.dim_size(2);
    const int64_t out_size = So3PackedSize(bandwidth);
    Tensor* z = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, TensorShape({batch, outputs, out_size}), &z));
    if (z->NumElements() == 0) return;
    Complex* target = z->flat<Complex>().data();
    if (channels == 0) {
      z->flat<Complex>().setZero();
      return;
    }
    const Complex* x_data = x.flat<Complex>().data();
    const Complex* y_data = y.flat<Complex>().data();
    const bool so3 = so3_;
    // Degree l: x^l[b, c, m, k] at InOffset(l) + m * Inner(l) + k.
    auto inner = [so3](int64_t l) { return so3 ? 2 * l + 1 : int64_t{1}; };
    auto in_offset = [so3](int64_t l) {
      return so3 ? DegreeOffset(l) : l * l;
    };

    // Tasks: each degree split into row and column blocks that keep the
    // gathered operands near 1 MB; largest first, taken dynamically.
    constexpr int64_t kBlockFloats = 1 << 18;
    std::vector<MmTask> tasks;
    for (int64_t l = 0; l < bandwidth; ++l) {
      const int64_t side = 2 * l + 1;
      const int64_t depth = 2 * channels * inner(l);  // real columns of A
      const int64_t rows = batch * side;
      const int64_t cols = outputs * side;
      const int64_t col_block = std::max<int64_t>(
          16, std::min<int64_t>(128, kBlockFloats / depth / 16 * 16));
      const int64_t row_block = std::max<int64_t>(
          1, std::min<int64_t>(192, kBlockFloats / depth / 2));
      for (int64_t r = 0; r < rows; r += row_block) {
        for (int64_t c = 0; c < cols; c += col_block) {
          const int64_t r_end = std::min(rows, r + row_block);
          const int64_t c_end = std::min(cols, c + col_block);
          tasks.push_back(
              {l, r, r_end, c, c_end, (r_end - r) * (c_end - c) * depth});
        }
      }
    }
    std::stable_sort(tasks.begin(), tasks.end(),
                     [](const MmTask& a, const MmTask& b) {
                       return a.cost > b.cost;
                     });
    int64_t total_cost = 0;
    for (const MmTask& task : tasks) total_cost += task.cost;

    std::atomic<int64_t> next{0};
    auto lane = [&](int64_t, int64_t) {
      std::vector<Real> left, right, product, packed;
      for (int64_t t = next++; t < static_cast<int64_t>(tasks.size());
           t = next++) {
        const MmTask& task = tasks[t];
        const int64_t l = task.degree;
        const int64_t side = 2 * l + 1;
        const int64_t width = inner(l);
        const int64_t offset = in_offset(l);
        const int64_t depth = 2 * channels * width;
        const int64_t rows = task.row_end - task.row_begin;
        const int64_t cols = task.col_end - task.col_begin;
        left.resize(2 * rows * depth);
        right.resize(depth * cols);
        product.resize(2 * rows * cols);

        // A: rows (b, m) -> real rows 2i (re, im) and 2i+1 (im, -re).
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t e = (task.row_begin + i) / side;
          const int64_t m = (task.row_begin + i) % side;
          Real* even = left.data() + 2 * i * depth;
          Real* odd = even + depth;
          for (int64_t c = 0; c < channels; ++c) {
            const Complex* source = x_data + (e * channels + c) * in_size +
                                    offset + m * width;
            for (int64_t k = 0; k < width; ++k) {
              const int64_t column = 2 * (c * width + k);
              even[column] = source[k].real();
              even[column + 1] = source[k].imag();
              odd[column] = source[k].imag();
              odd[column + 1] = -source[k].real();
            }
          }
        }
        // B: columns (o, n); rows 2kk (re) and 2kk+1 (im), kk = (c, k).
        for (int64_t j = 0; j < cols; ++j) {
          const int64_t o = (task.col_begin + j) / side;
          const int64_t n = (task.col_begin + j) % side;
          for (int64_t c = 0; c < channels; ++c) {
            const Complex* source = y_data + (c * outputs + o) * in_size +
                                    offset + n * width;
            Real* column = right.data() + 2 * c * width * cols + j;
            for (int64_t k = 0; k < width; ++k) {
              column[2 * k * cols] = source[k].real();
              column[(2 * k + 1) * cols] = source[k].imag();
            }
          }
        }

        RealProduct(2 * rows, cols, depth, left.data(), right.data(),
                    product.data(), &packed);

        // Scatter: z[b, o, p(l, m, n)] = (product[2i, j], product[2i+1, j]).
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t e = (task.row_begin + i) / side;
          const int64_t m = (task.row_begin + i) % side;
          const Real* re = product.data() + 2 * i * cols;
          const Real* im = re + cols;
          int64_t j = 0;
          while (j < cols) {
            const int64_t o = (task.col_begin + j) / side;
            const int64_t n = (task.col_begin + j) % side;
            const int64_t run = std::min(side - n, cols - j);
            Complex* out = target + (e * outputs + o) * out_size +
                           DegreeOffset(l) + m * side + n;
            for (int64_t q = 0; q < run; ++q) {
              out[q] = Complex(re[j + q], im[j + q]);
            }
            j += run;
          }
        }
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    const int64_t lanes = std::max<int64_t>(
        1, std::min<int64_t>({static_cast<int64_t>(workers->num_threads),
                              static_cast<int64_t>(tasks.size()),
                              total_cost / 20000}));
    if (lanes <= 1) {
      lane(0, 1);
      return;
    }
    ::tensorflow::Shard(workers->num_threads, workers->workers, lanes,
                        int64_t{1} << 40, lane);
  }

 private:
  bool so3_;
};

template <typename Real>
class S2MmOp : public SphericalMmOp<Real> {
 public:
  explicit S2MmOp(OpKernelConstruction* context)
      : SphericalMmOp<Real>(context, /*so3=*/false) {}
};

template <typename Real>
class So3MmOp : public SphericalMmOp<Real> {
 public:
  explicit So3MmOp(OpKernelConstruction* context)
      : SphericalMmOp<Real>(context, /*so3=*/true) {}
};

int64_t Known(InferenceContext* context, DimensionHandle dimension) {
  return context->ValueKnown(dimension) ? context->Value(dimension) : -1;
}

// x [B, C_in, S], y [C_in, C_out, S] -> [B, C_out, P(b)].
absl::Status MmShape(InferenceContext* context, bool so3) {
  const std::string op = so3 ? "TfcvSo3Mm" : "TfcvS2Mm";
  ShapeHandle x;
  ShapeHandle y;
  TF_RETURN_IF_ERROR(context->WithRank(context->input(0), 3, &x));
  TF_RETURN_IF_ERROR(context->WithRank(context->input(1), 3, &y));
  int64_t bandwidth;
  TF_RETURN_IF_ERROR(CheckOperands(
      op, so3, context->DebugString(x), context->DebugString(y),
      Known(context, context->Dim(x, 1)), Known(context, context->Dim(x, 2)),
      Known(context, context->Dim(y, 0)), Known(context, context->Dim(y, 2)),
      &bandwidth));
  DimensionHandle out_size = context->UnknownDim();
  if (bandwidth >= 0) out_size = context->MakeDim(So3PackedSize(bandwidth));
  context->set_output(0, context->MakeShape({context->Dim(x, 0),
                                             context->Dim(y, 1), out_size}));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfcvS2Mm")
    .Attr("T: {complex64, complex128}")
    .Input("x: T")
    .Input("y: T")
    .Output("z: T")
    .SetShapeFn([](InferenceContext* context) {
      return MmShape(context, /*so3=*/false);
    });

REGISTER_OP("TfcvSo3Mm")
    .Attr("T: {complex64, complex128}")
    .Input("x: T")
    .Input("y: T")
    .Output("z: T")
    .SetShapeFn([](InferenceContext* context) {
      return MmShape(context, /*so3=*/true);
    });

#define TFCV_REGISTER_MM_KERNELS(complex_type, real_type)                   \
  REGISTER_KERNEL_BUILDER(                                                  \
      Name("TfcvS2Mm").Device(DEVICE_CPU).TypeConstraint<complex_type>("T"), \
      S2MmOp<real_type>);                                                   \
  REGISTER_KERNEL_BUILDER(Name("TfcvSo3Mm")                                 \
                              .Device(DEVICE_CPU)                           \
                              .TypeConstraint<complex_type>("T"),           \
                          So3MmOp<real_type>)

TFCV_REGISTER_MM_KERNELS(::tensorflow::complex64, float);
TFCV_REGISTER_MM_KERNELS(::tensorflow::complex128, double);

#undef TFCV_REGISTER_MM_KERNELS

}  // namespace tfcv
