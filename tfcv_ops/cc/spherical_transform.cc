// The beta-stage of the S^2 and SO(3) generalized FFTs: contraction of a
// grid signal (already Fourier transformed over alpha and gamma) with a table
// of Wigner small-d values, and its adjoint, the expansion of a spectrum.
//
// Spherical CNNs (Cohen, Geiger, Koehler & Welling, 2018, "Spherical CNNs",
// arXiv:1801.10130), Eqs. 8-9 and Appendix C. On the SOFT grid with N = 2b
// points per angle, after an FFT over (alpha, gamma) the SO(3) transform is
//
//   y[b, p(l,m,n)] = sum_j T[j, p(l,m,n)] x[b, j, m mod N, n mod N]
//
// (TfcvSo3Contract) for degrees l < bandwidth and |m|, |n| <= l, where
// T[j, p] = w_j d^l_{mn}(beta_j) with the quadrature weights folded in by the
// caller. Its adjoint (transpose: T is real) is TfcvSo3Expand,
//
//   x[b, j, m mod N, n mod N] = sum_{max(|m|,|n|) <= l < bandwidth}
//                               T[j, p(l,m,n)] y[b, p(l,m,n)],
//
// zero at every other frequency; the inverse transform applies it to
// (2l+1) y. On S^2 the same holds with one frequency axis and n = 0
// (TfcvS2Contract, TfcvS2Expand).
//
// Packed spectra (spectral axis last): SO(3) entry (l, m, n) at
// p(l,m,n) = l(4l^2-1)/3 + (m+l)(2l+1) + (n+l), P(b) = b(4b^2-1)/3 entries;
// S^2 entry (l, m) at l^2 + l + m, b^2 entries. Tables: [J, P(b)] and
// [J, b^2] with those column layouts.
//
// Algorithm (SO(3)): for one frequency (m, n) the contraction is a matrix
// product [L, J] x [J, B] -> [L, B] over the L = b - max(|m|,|n|) degrees
// that contain it. Work units are (batch tile, grid row m mod N): a unit
// gathers its row of x for the whole tile into a frequency-major buffer
// [n][J][B] (complex as two reals), reads the table once per frequency,
// runs one Eigen matrix product per frequency and scatters the result into
// the packed spectrum. Expansion runs the same steps backwards. Units are
// sharded over the CPU worker threads.
//
// Dtypes: complex64 signals with a float table, complex128 with a double
// table. Gradients are registered in Python (tfcv_ops/spherical_kernels.py):
// each op's gradient is the other op applied to the upstream gradient.

#include <algorithm>
#include <complex>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfcv {
namespace {

using ::tensorflow::DataType;
using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::TensorShapeUtils;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Bytes of the per-unit frequency-major buffer we aim for; sets the tile.
constexpr int64_t kTargetBufferBytes = 4 << 20;
constexpr int64_t kMaxBatchTile = 64;

// Packed SO(3) spectrum size P(b) = sum_{l<b} (2l+1)^2 = b(4b^2-1)/3.
int64_t So3PackedSize(int64_t bandwidth) {
  return bandwidth * (4 * bandwidth * bandwidth - 1) / 3;
}

// Column where degree l's block starts: sum_{k<l} (2k+1)^2.
int64_t DegreeOffset(int64_t l) { return l * (4 * l * l - 1) / 3; }

// The b with P(b) == packed_size, or -1 when packed_size is no P(b).
int64_t So3BandwidthOf(int64_t packed_size) {
  int64_t bandwidth = 0;
  while (So3PackedSize(bandwidth) < packed_size) ++bandwidth;
  return So3PackedSize(bandwidth) == packed_size ? bandwidth : -1;
}

// The b with b^2 == packed_size, or -1 when packed_size is no square.
int64_t S2BandwidthOf(int64_t packed_size) {
  int64_t bandwidth = 0;
  while (bandwidth * bandwidth < packed_size) ++bandwidth;
  return bandwidth * bandwidth == packed_size ? bandwidth : -1;
}

// Frequency m (or n) stored at grid index k of an axis of length N.
int64_t FrequencyOf(int64_t k, int64_t grid_size) {
  return k < grid_size / 2 ? k : k - grid_size;
}

absl::Status InvalidArgument(const std::string& op, const std::string& text) {
  return absl::InvalidArgumentError(op + ": " + text);
}

// The checks shared by kernels and shape functions; -1 means "unknown".

absl::Status CheckGrid(const std::string& op, int64_t grid_size,
                       int64_t bandwidth, const std::string& where) {
  if (grid_size >= 0 && grid_size % 2 != 0) {
    return InvalidArgument(
        op, "the grid side N must be even (N = 2 b_grid on the SOFT grid), "
                "received N = " +
                std::to_string(grid_size) + " " + where + ".");
  }
  if (grid_size >= 0 && bandwidth >= 0 && 2 * bandwidth > grid_size) {
    return InvalidArgument(
        op, "bandwidth must be at most N/2 = " +
                std::to_string(grid_size / 2) +
                " (a grid of side N resolves frequencies |m| < N/2 only), "
                "received bandwidth " +
                std::to_string(bandwidth) + " for N = " +
                std::to_string(grid_size) + " " + where + ".");
  }
  return absl::OkStatus();
}

absl::Status CheckDtypes(const std::string& op, DataType complex_type,
                         DataType real_type) {
  const bool single = complex_type == ::tensorflow::DT_COMPLEX64 &&
                      real_type == ::tensorflow::DT_FLOAT;
  const bool twice = complex_type == ::tensorflow::DT_COMPLEX128 &&
                     real_type == ::tensorflow::DT_DOUBLE;
  if (!single && !twice) {
    return InvalidArgument(
        op, "the table must be float32 for complex64 signals and float64 "
                "for complex128 signals, received " +
                ::tensorflow::DataTypeString(complex_type) + " with " +
                ::tensorflow::DataTypeString(real_type) + ".");
  }
  return absl::OkStatus();
}

// Number of batch elements per work unit: keeps the unit's buffers near
// kTargetBufferBytes.
int64_t BatchTile(int64_t batch, int64_t rows, int64_t columns,
                  int64_t real_bytes) {
  const int64_t per_element = std::max<int64_t>(1, rows * columns) * 2 *
                              real_bytes;
  const int64_t tile = std::max<int64_t>(1, kTargetBufferBytes / per_element);
  return std::max<int64_t>(1, std::min({tile, kMaxBatchTile, batch}));
}

// ---------------------------------------------------------------- SO(3) ---

// Shapes and buffers of one SO(3) call; the methods do one work unit.
template <typename Real>
struct So3Stage {
  using Complex = std::complex<Real>;
  using RowMatrix =
      Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  int64_t batch, rows, grid_size, bandwidth, packed_size, tile;
  const Real* table;  // [J, P]

  int64_t columns() const { return 2 * bandwidth - 1; }  // n = -(b-1)..b-1
  int64_t LowestDegree(int64_t m, int64_t n) const {
    return std::max(std::abs(m), std::abs(n));
  }

  // gathered[(l - lmin) * J + j] = T[j, p(l, m, n)], l = lmin..b-1.
  void GatherTable(int64_t m, int64_t n, Real* gathered) const {
    const int64_t lmin = LowestDegree(m, n);
    for (int64_t l = lmin; l < bandwidth; ++l) {
      const int64_t p = DegreeOffset(l) + (m + l) * (2 * l + 1) + (n + l);
      Real* out = gathered + (l - lmin) * rows;
      for (int64_t j = 0; j < rows; ++j) out[j] = table[j * packed_size + p];
    }
  }

  // Index into the spectrum buffer [n_index][l - lmin][width].
  int64_t SpectrumIndex(int64_t m, int64_t n, int64_t l, int64_t width) const {
    return ((n + bandwidth - 1) * bandwidth + (l - LowestDegree(m, n))) *
           width;
  }

  // x [B, J, N, N] -> y [B, P] for one (batch tile, grid row) unit.
  void Contract(int64_t unit, const Complex* x, Complex* y,
                Real* grid, Real* spectrum, Real* table_buffer) const {
    const int64_t row = unit % grid_size;
    const int64_t m = FrequencyOf(row, grid_size);
    if (std::abs(m) >= bandwidth) return;
    const int64_t first = (unit / grid_size) * tile;
    const int64_t count = std::min(tile, batch - first);
    const int64_t width = 2 * count;  // complex as (re, im) pairs

    // Gather the row into the frequency-major buffer [n][J][count].
    for (int64_t j = 0; j < rows; ++j) {
      for (int64_t e = 0; e < count; ++e) {
        const Complex* source =
            x + (((first + e) * rows + j) * grid_size + row) * grid_size;
        for (int64_t n = 1 - bandwidth; n < bandwidth; ++n) {
          const Complex value = source[n >= 0 ? n : n + grid_size];
          Real* target =
              grid + ((n + bandwidth - 1) * rows + j) * width + 2 * e;
          target[0] = value.real();
          target[1] = value.imag();
        }
      }
    }

    // One product per frequency: [L, J] x [J, width] -> [L, width].
    for (int64_t n = 1 - bandwidth; n < bandwidth; ++n) {
      const int64_t degrees = bandwidth - LowestDegree(m, n);
      GatherTable(m, n, table_buffer);
      Eigen::Map<const RowMatrix> weights(table_buffer, degrees, rows);
      Eigen::Map<const RowMatrix> signal(
          grid + (n + bandwidth - 1) * rows * width, rows, width);
      Eigen::Map<RowMatrix> result(
          spectrum + SpectrumIndex(m, n, LowestDegree(m, n), width), degrees,
          width);
      result.noalias() = weights * signal;
    }

    // Scatter into the packed spectrum; (l, m, .) is one contiguous run.
    for (int64_t e = 0; e < count; ++e) {
      for (int64_t l = std::abs(m); l < bandwidth; ++l) {
        Complex* target = y + (first + e) * packed_size + DegreeOffset(l) +
                          (m + l) * (2 * l + 1) + l;
        for (int64_t n = -l; n <= l; ++n) {
          const Real* source =
              spectrum + SpectrumIndex(m, n, l, width) + 2 * e;
          target[n] = Complex(source[0], source[1]);
        }
      }
    }
  }

  // y [B, P] -> x [B, J, N, N] for one (batch tile, grid row) unit.
  void Expand(int64_t unit, const Complex* y, Complex* x,
              Real* grid, Real* spectrum, Real* table_buffer) const {
    const int64_t row = unit % grid_size;
    const int64_t m = FrequencyOf(row, grid_size);
    const int64_t first = (unit / grid_size) * tile;
    const int64_t count = std::min(tile, batch - first);
    const int64_t width = 2 * count;
    const int64_t plane = grid_size * grid_size;
    if (std::abs(m) >= bandwidth) {
      for (int64_t e = 0; e < count; ++e) {
        for (int64_t j = 0; j < rows; ++j) {
          Complex* target =
              x + ((first + e) * rows + j) * plane + row * grid_size;
          std::fill(target, target + grid_size, Complex(0, 0));
        }
      }
      return;
    }

    // Gather the spectrum's (l, m, .) runs into [n][l - lmin][count].
    for (int64_t e = 0; e < count; ++e) {
      for (int64_t l = std::abs(m); l < bandwidth; ++l) {
        const Complex* source = y + (first + e) * packed_size +
                                DegreeOffset(l) + (m + l) * (2 * l + 1) + l;
        for (int64_t n = -l; n <= l; ++n) {
          Real* target = spectrum + SpectrumIndex(m, n, l, width) + 2 * e;
          target[0] = source[n].real();
          target[1] = source[n].imag();
        }
      }
    }

    // One product per frequency: [J, L] x [L, width] -> [J, width].
    for (int64_t n = 1 - bandwidth; n < bandwidth; ++n) {
      const int64_t degrees = bandwidth - LowestDegree(m, n);
      GatherTable(m, n, table_buffer);
      Eigen::Map<const RowMatrix> weights(table_buffer, degrees, rows);
      Eigen::Map<const RowMatrix> coefficients(
          spectrum + SpectrumIndex(m, n, LowestDegree(m, n), width), degrees,
          width);
      Eigen::Map<RowMatrix> result(grid + (n + bandwidth - 1) * rows * width,
                                   rows, width);
      result.noalias() = weights.transpose() * coefficients;
    }

    // Scatter into the grid row, with zeros outside the band.
    for (int64_t j = 0; j < rows; ++j) {
      for (int64_t e = 0; e < count; ++e) {
        Complex* target =
            x + ((first + e) * rows + j) * plane + row * grid_size;
        for (int64_t k = 0; k < grid_size; ++k) {
          const int64_t n = FrequencyOf(k, grid_size);
          if (std::abs(n) >= bandwidth) {
            target[k] = Complex(0, 0);
            continue;
          }
          const Real* source =
              grid + ((n + bandwidth - 1) * rows + j) * width + 2 * e;
          target[k] = Complex(source[0], source[1]);
        }
      }
    }
  }

  // Runs `contract ? Contract : Expand` over all units on the CPU workers.
  // Each block of units allocates its scratch once (a few MB, BatchTile).
  void Run(OpKernelContext* context, bool contract, const Complex* input,
           Complex* output) const {
    const int64_t tiles = (batch + tile - 1) / tile;
    const int64_t units = tiles * grid_size;
    const int64_t grid_entries = columns() * rows * 2 * tile;
    const int64_t spectrum_entries = columns() * bandwidth * 2 * tile;
    const int64_t table_entries = bandwidth * rows;
    auto work = [&](int64_t begin, int64_t end) {
      // Uninitialised: a unit writes every entry before it reads it.
      std::unique_ptr<Real[]> scratch(
          new Real[grid_entries + spectrum_entries + table_entries]);
      Real* grid = scratch.get();
      Real* spectrum = grid + grid_entries;
      Real* gathered = spectrum + spectrum_entries;
      for (int64_t unit = begin; unit < end; ++unit) {
        if (contract) {
          Contract(unit, input, output, grid, spectrum, gathered);
        } else {
          Expand(unit, input, output, grid, spectrum, gathered);
        }
      }
    };
    const int64_t cost_per_unit =
        std::max<int64_t>(1, 4 * tile * rows * columns() * bandwidth);
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(workers->num_threads, workers->workers, units,
                        cost_per_unit, work);
  }
};

// Checks the table [J, P] against the signal's J and P; "" if unknown.
absl::Status CheckTable(const std::string& op, const TensorShape& table,
                        int64_t rows, int64_t packed_size,
                        const std::string& packed_rule) {
  if (!TensorShapeUtils::IsMatrix(table)) {
    return InvalidArgument(op, "table must be 2-D [J, " + packed_rule +
                                   "], received shape " +
                                   table.DebugString() + ".");
  }
  if (table.dim_size(0) != rows) {
    return InvalidArgument(
        op, "table has J = " + std::to_string(table.dim_size(0)) +
                " rows but the signal has J = " + std::to_string(rows) +
                " beta rows; they must match (table shape " +
                table.DebugString() + ").");
  }
  if (table.dim_size(1) != packed_size) {
    return InvalidArgument(
        op, "table must have " + packed_rule + " = " +
                std::to_string(packed_size) + " columns, received shape " +
                table.DebugString() + ".");
  }
  return absl::OkStatus();
}

template <typename Real>
class So3ContractOp : public OpKernel {
 public:
  explicit So3ContractOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("bandwidth", &bandwidth_));
  }

  void Compute(OpKernelContext* context) override {
    const std::string op = "TfcvSo3Contract";
    const Tensor& x = context->input(0);
    const Tensor& table = context->input(1);
    OP_REQUIRES(context,
                x.dims() == 4 && x.dim_size(2) == x.dim_size(3),
                InvalidArgument(op, "x must be 4-D [B, J, N, N] (a square "
                                    "(alpha, gamma) grid), received shape " +
                                        x.shape().DebugString() + "."));
    const int64_t grid_size = x.dim_size(2);
    OP_REQUIRES_OK(context,
                   CheckGrid(op, grid_size, bandwidth_,
                             "from x shape " + x.shape().DebugString()));
    const int64_t packed_size = So3PackedSize(bandwidth_);
    OP_REQUIRES_OK(context,
                   CheckTable(op, table.shape(), x.dim_size(1), packed_size,
                              "P(bandwidth) = b(4b^2-1)/3 for bandwidth " +
                                  std::to_string(bandwidth_)));

    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({x.dim_size(0), packed_size}),
                                &y));
    if (y->NumElements() == 0) return;
    if (x.dim_size(1) == 0) {
      y->flat<std::complex<Real>>().setZero();
      return;
    }
    So3Stage<Real> stage{x.dim_size(0),
                         x.dim_size(1),
                         grid_size,
                         bandwidth_,
                         packed_size,
                         BatchTile(x.dim_size(0), x.dim_size(1),
                                   2 * bandwidth_ - 1, sizeof(Real)),
                         table.flat<Real>().data()};
    stage.Run(context, /*contract=*/true,
              x.flat<std::complex<Real>>().data(),
              y->flat<std::complex<Real>>().data());
  }

 private:
  int64_t bandwidth_;
};

template <typename Real>
class So3ExpandOp : public OpKernel {
 public:
  explicit So3ExpandOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("grid_size", &grid_size_));
    OP_REQUIRES_OK(context, CheckGrid("TfcvSo3Expand", grid_size_, -1,
                                      "from the grid_size attribute"));
  }

  void Compute(OpKernelContext* context) override {
    const std::string op = "TfcvSo3Expand";
    const Tensor& y = context->input(0);
    const Tensor& table = context->input(1);
    OP_REQUIRES(context, TensorShapeUtils::IsMatrix(y.shape()),
                InvalidArgument(op, "y must be 2-D [B, P], received shape " +
                                        y.shape().DebugString() + "."));
    const int64_t packed_size = y.dim_size(1);
    const int64_t bandwidth = So3BandwidthOf(packed_size);
    OP_REQUIRES(
        context, bandwidth >= 0,
        InvalidArgument(op, "y's last dimension must be a packed SO(3) size "
                            "P(b) = b(4b^2-1)/3 (1, 10, 35, 84, ...), "
                            "received shape " +
                                y.shape().DebugString() + "."));
    OP_REQUIRES_OK(context,
                   CheckGrid(op, grid_size_, bandwidth,
                             "from y shape " + y.shape().DebugString() +
                                 " and grid_size"));
    OP_REQUIRES(context, TensorShapeUtils::IsMatrix(table.shape()),
                InvalidArgument(op, "table must be 2-D [J, P], received "
                                    "shape " +
                                        table.shape().DebugString() + "."));
    const int64_t rows = table.dim_size(0);
    OP_REQUIRES_OK(context,
                   CheckTable(op, table.shape(), rows, packed_size,
                              "P = y.shape[1]"));

    Tensor* x = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0,
                       TensorShape({y.dim_size(0), rows, grid_size_,
                                    grid_size_}),
                       &x));
    if (x->NumElements() == 0) return;
    if (bandwidth == 0) {  // an empty spectrum expands to zeros
      x->flat<std::complex<Real>>().setZero();
      return;
    }
    So3Stage<Real> stage{
        y.dim_size(0),
        rows,
        grid_size_,
        bandwidth,
        packed_size,
        BatchTile(y.dim_size(0), rows, 2 * bandwidth - 1, sizeof(Real)),
        table.flat<Real>().data()};
    stage.Run(context, /*contract=*/false,
              y.flat<std::complex<Real>>().data(),
              x->flat<std::complex<Real>>().data());
  }

 private:
  int64_t grid_size_;
};

// ------------------------------------------------------------------ S^2 ---
//
// Both S^2 ops work on tiles of kS2Tile batch elements whose complex values
// sit side by side ((re, im) of each element: 2 kS2Tile reals), so every
// multiply-add is a short vector operation. The table is reordered once per
// call into frequency-major order q(m, l): m = -(b-1)..b-1, then
// l = |m|..b-1, so the degrees of one frequency are contiguous. A batch
// remainder smaller than a tile runs element by element.

constexpr int64_t kS2Tile = 8;

// GCC/Clang vector of 16 bytes (4 floats, 2 doubles): plain SSE2 on x86-64.
template <typename Real>
struct S2Vector;
template <>
struct S2Vector<float> {
  typedef float type __attribute__((vector_size(16)));
};
template <>
struct S2Vector<double> {
  typedef double type __attribute__((vector_size(16)));
};

template <typename Real>
struct S2Stage {
  using Complex = std::complex<Real>;
  using Vector = typename S2Vector<Real>::type;
  static constexpr int64_t kLanes = sizeof(Vector) / sizeof(Real);

  int64_t batch, rows, grid_size, bandwidth;
  std::vector<int64_t> first_q;  // first_q[m + b - 1] = q(m, |m|)
  std::vector<Real> weights;     // contract: [q][J]; expand: [J][q]

  S2Stage(int64_t batch_size, int64_t row_count, int64_t grid,
          int64_t band, const Real* table, bool contract)
      : batch(batch_size), rows(row_count), grid_size(grid), bandwidth(band) {
    const int64_t packed_size = bandwidth * bandwidth;
    weights.resize(rows * packed_size);
    first_q.resize(2 * bandwidth);
    int64_t q = 0;
    for (int64_t m = 1 - bandwidth; m < bandwidth; ++m) {
      first_q[m + bandwidth - 1] = q;
      for (int64_t l = std::abs(m); l < bandwidth; ++l, ++q) {
        const int64_t p = l * l + l + m;
        for (int64_t j = 0; j < rows; ++j) {
          const Real value = table[j * packed_size + p];
          if (contract) {
            weights[q * rows + j] = value;
          } else {
            weights[j * packed_size + q] = value;
          }
        }
      }
    }
    first_q[2 * bandwidth - 1] = q;
  }

  // y[first + e, p(l, m)] = sum_j T[j, p(l, m)] x[first + e, j, m mod N]
  // for e < kTile; `signal` holds rows * 2 kTile reals, 16-byte aligned.
  template <int64_t kTile>
  void Contract(int64_t first, const Complex* x, Complex* y,
                Real* signal) const {
    constexpr int64_t kWidth = 2 * kTile;
    constexpr int64_t kVectors = (kWidth + kLanes - 1) / kLanes;
    const int64_t packed_size = bandwidth * bandwidth;
    for (int64_t m = 1 - bandwidth; m < bandwidth; ++m) {
      const int64_t k = m >= 0 ? m : m + grid_size;
      for (int64_t j = 0; j < rows; ++j) {
        Real* out = signal + j * kVectors * kLanes;
        for (int64_t e = 0; e < kTile; ++e) {
          const Complex value = x[((first + e) * rows + j) * grid_size + k];
          out[2 * e] = value.real();
          out[2 * e + 1] = value.imag();
        }
        for (int64_t t = kWidth; t < kVectors * kLanes; ++t) out[t] = 0;
      }
      const Vector* columns = reinterpret_cast<const Vector*>(signal);
      const int64_t q0 = first_q[m + bandwidth - 1];
      for (int64_t l = std::abs(m); l < bandwidth; ++l) {
        const Real* w = weights.data() + (q0 + l - std::abs(m)) * rows;
        Vector sum[kVectors] = {};
        for (int64_t j = 0; j < rows; ++j) {
          const Real weight = w[j];
          for (int64_t v = 0; v < kVectors; ++v) {
            sum[v] += weight * columns[j * kVectors + v];
          }
        }
        Real result[kVectors * kLanes];
        for (int64_t v = 0; v < kVectors; ++v) {
          for (int64_t t = 0; t < kLanes; ++t) {
            result[v * kLanes + t] = sum[v][t];
          }
        }
        for (int64_t e = 0; e < kTile; ++e) {
          y[(first + e) * packed_size + l * l + l + m] =
              Complex(result[2 * e], result[2 * e + 1]);
        }
      }
    }
  }

  // x[first + e, j, m mod N] = sum_{l >= |m|} T[j, p(l, m)]
  // y[first + e, p(l, m)], zero for |m| >= b; `spectrum` holds
  // b^2 * 2 kTile reals, 16-byte aligned.
  template <int64_t kTile>
  void Expand(int64_t first, const Complex* y, Complex* x,
              Real* spectrum) const {
    constexpr int64_t kWidth = 2 * kTile;
    constexpr int64_t kVectors = (kWidth + kLanes - 1) / kLanes;
    const int64_t packed_size = bandwidth * bandwidth;
    for (int64_t m = 1 - bandwidth; m < bandwidth; ++m) {
      const int64_t q0 = first_q[m + bandwidth - 1];
      for (int64_t l = std::abs(m); l < bandwidth; ++l) {
        Real* out = spectrum + (q0 + l - std::abs(m)) * kVectors * kLanes;
        for (int64_t e = 0; e < kTile; ++e) {
          const Complex value = y[(first + e) * packed_size + l * l + l + m];
          out[2 * e] = value.real();
          out[2 * e + 1] = value.imag();
        }
        for (int64_t t = kWidth; t < kVectors * kLanes; ++t) out[t] = 0;
      }
    }
    const Vector* coefficients = reinterpret_cast<const Vector*>(spectrum);
    for (int64_t j = 0; j < rows; ++j) {
      const Real* w = weights.data() + j * packed_size;
      for (int64_t e = 0; e < kTile; ++e) {
        Complex* target = x + ((first + e) * rows + j) * grid_size;
        std::fill(target + bandwidth, target + grid_size - bandwidth + 1,
                  Complex(0, 0));
      }
      for (int64_t m = 1 - bandwidth; m < bandwidth; ++m) {
        const int64_t k = m >= 0 ? m : m + grid_size;
        const int64_t q0 = first_q[m + bandwidth - 1];
        const int64_t q1 = first_q[m + bandwidth];
        Vector sum[kVectors] = {};
        for (int64_t q = q0; q < q1; ++q) {
          const Real weight = w[q];
          for (int64_t v = 0; v < kVectors; ++v) {
            sum[v] += weight * coefficients[q * kVectors + v];
          }
        }
        Real result[kVectors * kLanes];
        for (int64_t v = 0; v < kVectors; ++v) {
          for (int64_t t = 0; t < kLanes; ++t) {
            result[v * kLanes + t] = sum[v][t];
          }
        }
        for (int64_t e = 0; e < kTile; ++e) {
          x[((first + e) * rows + j) * grid_size + k] =
              Complex(result[2 * e], result[2 * e + 1]);
        }
      }
    }
  }

  // Runs Contract or Expand over all batch tiles on the CPU workers.
  void Run(OpKernelContext* context, bool contract, const Complex* input,
           Complex* output) const {
    const int64_t tiles = (batch + kS2Tile - 1) / kS2Tile;
    const int64_t scratch_size =
        (contract ? rows : bandwidth * bandwidth) * 2 * kS2Tile + kLanes;
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<Vector> scratch(scratch_size / kLanes + 1);
      Real* buffer = reinterpret_cast<Real*>(scratch.data());
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t first = tile * kS2Tile;
        const int64_t count = std::min(kS2Tile, batch - first);
        if (count == kS2Tile) {
          if (contract) {
            Contract<kS2Tile>(first, input, output, buffer);
          } else {
            Expand<kS2Tile>(first, input, output, buffer);
          }
          continue;
        }
        for (int64_t e = first; e < first + count; ++e) {
          if (contract) {
            Contract<1>(e, input, output, buffer);
          } else {
            Expand<1>(e, input, output, buffer);
          }
        }
      }
    };
    const int64_t cost_per_tile =
        2 * kS2Tile * rows * (bandwidth * bandwidth + grid_size);
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(workers->num_threads, workers->workers, tiles,
                        cost_per_tile, work);
  }
};

template <typename Real>
class S2ContractOp : public OpKernel {
 public:
  explicit S2ContractOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("bandwidth", &bandwidth_));
  }

  void Compute(OpKernelContext* context) override {
    const std::string op = "TfcvS2Contract";
    const Tensor& x = context->input(0);
    const Tensor& table = context->input(1);
    OP_REQUIRES(context, x.dims() == 3,
                InvalidArgument(op, "x must be 3-D [B, J, N], received "
                                    "shape " +
                                        x.shape().DebugString() + "."));
    const int64_t grid_size = x.dim_size(2);
    OP_REQUIRES_OK(context,
                   CheckGrid(op, grid_size, bandwidth_,
                             "from x shape " + x.shape().DebugString()));
    const int64_t packed_size = bandwidth_ * bandwidth_;
    OP_REQUIRES_OK(context,
                   CheckTable(op, table.shape(), x.dim_size(1), packed_size,
                              "bandwidth^2 for bandwidth " +
                                  std::to_string(bandwidth_)));

    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({x.dim_size(0), packed_size}),
                                &y));
    if (y->NumElements() == 0) return;
    S2Stage<Real> stage(x.dim_size(0), x.dim_size(1), grid_size, bandwidth_,
                        table.flat<Real>().data(), /*contract=*/true);
    stage.Run(context, /*contract=*/true,
              x.flat<std::complex<Real>>().data(),
              y->flat<std::complex<Real>>().data());
  }

 private:
  int64_t bandwidth_;
};

template <typename Real>
class S2ExpandOp : public OpKernel {
 public:
  explicit S2ExpandOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("grid_size", &grid_size_));
    OP_REQUIRES_OK(context, CheckGrid("TfcvS2Expand", grid_size_, -1,
                                      "from the grid_size attribute"));
  }

  void Compute(OpKernelContext* context) override {
    const std::string op = "TfcvS2Expand";
    const Tensor& y = context->input(0);
    const Tensor& table = context->input(1);
    OP_REQUIRES(context, TensorShapeUtils::IsMatrix(y.shape()),
                InvalidArgument(op, "y must be 2-D [B, b^2], received shape " +
                                        y.shape().DebugString() + "."));
    const int64_t packed_size = y.dim_size(1);
    const int64_t bandwidth = S2BandwidthOf(packed_size);
    OP_REQUIRES(context, bandwidth >= 0,
                InvalidArgument(op, "y's last dimension must be a packed S^2 "
                                    "size b^2 (a perfect square), received "
                                    "shape " +
                                        y.shape().DebugString() + "."));
    OP_REQUIRES_OK(context,
                   CheckGrid(op, grid_size_, bandwidth,
                             "from y shape " + y.shape().DebugString() +
                                 " and grid_size"));
    OP_REQUIRES(context, TensorShapeUtils::IsMatrix(table.shape()),
                InvalidArgument(op, "table must be 2-D [J, b^2], received "
                                    "shape " +
                                        table.shape().DebugString() + "."));
    const int64_t rows = table.dim_size(0);
    OP_REQUIRES_OK(context, CheckTable(op, table.shape(), rows, packed_size,
                                       "b^2 = y.shape[1]"));

    Tensor* x = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, TensorShape({y.dim_size(0), rows, grid_size_}),
                       &x));
    if (x->NumElements() == 0) return;
    if (bandwidth == 0) {  // an empty spectrum expands to zeros
      x->flat<std::complex<Real>>().setZero();
      return;
    }
    S2Stage<Real> stage(y.dim_size(0), rows, grid_size_, bandwidth,
                        table.flat<Real>().data(), /*contract=*/false);
    stage.Run(context, /*contract=*/false,
              y.flat<std::complex<Real>>().data(),
              x->flat<std::complex<Real>>().data());
  }

 private:
  int64_t grid_size_;
};

// ------------------------------------------------------ shape functions ---

// Value of a dimension, or -1 when unknown.
int64_t Known(InferenceContext* context, DimensionHandle dimension) {
  return context->ValueKnown(dimension) ? context->Value(dimension) : -1;
}

absl::Status CheckTypeAttrs(InferenceContext* context, const std::string& op) {
  DataType complex_type;
  DataType real_type;
  TF_RETURN_IF_ERROR(context->GetAttr("T", &complex_type));
  TF_RETURN_IF_ERROR(context->GetAttr("Treal", &real_type));
  return CheckDtypes(op, complex_type, real_type);
}

// Contract: x [B, J, grid dims...], table [J, packed] -> [B, packed].
absl::Status ContractShape(InferenceContext* context, const std::string& op,
                           int grid_rank, bool so3) {
  TF_RETURN_IF_ERROR(CheckTypeAttrs(context, op));
  ShapeHandle x;
  ShapeHandle table;
  TF_RETURN_IF_ERROR(context->WithRank(context->input(0), 2 + grid_rank, &x));
  TF_RETURN_IF_ERROR(context->WithRank(context->input(1), 2, &table));
  int64_t bandwidth;
  TF_RETURN_IF_ERROR(context->GetAttr("bandwidth", &bandwidth));
  DimensionHandle rows;
  TF_RETURN_IF_ERROR(
      context->Merge(context->Dim(x, 1), context->Dim(table, 0), &rows));
  DimensionHandle grid = context->Dim(x, 2);
  if (grid_rank == 2) {
    TF_RETURN_IF_ERROR(context->Merge(grid, context->Dim(x, 3), &grid));
  }
  TF_RETURN_IF_ERROR(
      CheckGrid(op, Known(context, grid), bandwidth, "from x's shape"));
  const int64_t packed_size =
      so3 ? So3PackedSize(bandwidth) : bandwidth * bandwidth;
  const int64_t table_columns = Known(context, context->Dim(table, 1));
  if (table_columns >= 0 && table_columns != packed_size) {
    return InvalidArgument(
        op, "table must have " + std::to_string(packed_size) +
                " columns (the packed size for bandwidth " +
                std::to_string(bandwidth) + "), received shape " +
                context->DebugString(table) + ".");
  }
  context->set_output(0, context->Matrix(context->Dim(x, 0), packed_size));
  return absl::OkStatus();
}

// Expand: y [B, packed], table [J, packed] -> [B, J, N (, N)].
absl::Status ExpandShape(InferenceContext* context, const std::string& op,
                         bool so3) {
  TF_RETURN_IF_ERROR(CheckTypeAttrs(context, op));
  ShapeHandle y;
  ShapeHandle table;
  TF_RETURN_IF_ERROR(context->WithRank(context->input(0), 2, &y));
  TF_RETURN_IF_ERROR(context->WithRank(context->input(1), 2, &table));
  int64_t grid_size;
  TF_RETURN_IF_ERROR(context->GetAttr("grid_size", &grid_size));
  DimensionHandle packed;
  TF_RETURN_IF_ERROR(
      context->Merge(context->Dim(y, 1), context->Dim(table, 1), &packed));
  int64_t bandwidth = -1;
  if (context->ValueKnown(packed)) {
    const int64_t size = context->Value(packed);
    bandwidth = so3 ? So3BandwidthOf(size) : S2BandwidthOf(size);
    if (bandwidth < 0) {
      return InvalidArgument(
          op, "the spectrum size " + std::to_string(size) + " is not a " +
                  (so3 ? "packed SO(3) size P(b) = b(4b^2-1)/3"
                       : "packed S^2 size b^2") +
                  ".");
    }
  }
  TF_RETURN_IF_ERROR(
      CheckGrid(op, grid_size, bandwidth, "from y's shape and grid_size"));
  std::vector<DimensionHandle> dims = {context->Dim(y, 0),
                                       context->Dim(table, 0),
                                       context->MakeDim(grid_size)};
  if (so3) dims.push_back(context->MakeDim(grid_size));
  context->set_output(0, context->MakeShape(dims));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfcvSo3Contract")
    .Attr("T: {complex64, complex128}")
    .Attr("Treal: {float, double}")
    .Attr("bandwidth: int >= 1")
    .Input("x: T")
    .Input("table: Treal")
    .Output("y: T")
    .SetShapeFn([](InferenceContext* context) {
      return ContractShape(context, "TfcvSo3Contract", 2, /*so3=*/true);
    });

REGISTER_OP("TfcvSo3Expand")
    .Attr("T: {complex64, complex128}")
    .Attr("Treal: {float, double}")
    .Attr("grid_size: int >= 2")
    .Input("y: T")
    .Input("table: Treal")
    .Output("x: T")
    .SetShapeFn([](InferenceContext* context) {
      return ExpandShape(context, "TfcvSo3Expand", /*so3=*/true);
    });

REGISTER_OP("TfcvS2Contract")
    .Attr("T: {complex64, complex128}")
    .Attr("Treal: {float, double}")
    .Attr("bandwidth: int >= 1")
    .Input("x: T")
    .Input("table: Treal")
    .Output("y: T")
    .SetShapeFn([](InferenceContext* context) {
      return ContractShape(context, "TfcvS2Contract", 1, /*so3=*/false);
    });

REGISTER_OP("TfcvS2Expand")
    .Attr("T: {complex64, complex128}")
    .Attr("Treal: {float, double}")
    .Attr("grid_size: int >= 2")
    .Input("y: T")
    .Input("table: Treal")
    .Output("x: T")
    .SetShapeFn([](InferenceContext* context) {
      return ExpandShape(context, "TfcvS2Expand", /*so3=*/false);
    });

#define TFCV_REGISTER_TRANSFORM_KERNELS(complex_type, real_type)           \
  REGISTER_KERNEL_BUILDER(Name("TfcvSo3Contract")                          \
                              .Device(DEVICE_CPU)                          \
                              .TypeConstraint<complex_type>("T")           \
                              .TypeConstraint<real_type>("Treal"),         \
                          So3ContractOp<real_type>);                       \
  REGISTER_KERNEL_BUILDER(Name("TfcvSo3Expand")                            \
                              .Device(DEVICE_CPU)                          \
                              .TypeConstraint<complex_type>("T")           \
                              .TypeConstraint<real_type>("Treal"),         \
                          So3ExpandOp<real_type>);                         \
  REGISTER_KERNEL_BUILDER(Name("TfcvS2Contract")                           \
                              .Device(DEVICE_CPU)                          \
                              .TypeConstraint<complex_type>("T")           \
                              .TypeConstraint<real_type>("Treal"),         \
                          S2ContractOp<real_type>);                        \
  REGISTER_KERNEL_BUILDER(Name("TfcvS2Expand")                             \
                              .Device(DEVICE_CPU)                          \
                              .TypeConstraint<complex_type>("T")           \
                              .TypeConstraint<real_type>("Treal"),         \
                          S2ExpandOp<real_type>)

TFCV_REGISTER_TRANSFORM_KERNELS(::tensorflow::complex64, float);
TFCV_REGISTER_TRANSFORM_KERNELS(::tensorflow::complex128, double);

#undef TFCV_REGISTER_TRANSFORM_KERNELS

}  // namespace tfcv
