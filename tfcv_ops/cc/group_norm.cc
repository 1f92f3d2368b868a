// Group normalization of [B, N, C] maps and its gradient, fused on the CPU.
//
// Wu & He (2018), "Group Normalization", arXiv:1803.08494, Sec. 3.1. The C
// channels form G groups of C/G consecutive channels; the set S_i of Eq. 7
// is one example and one group: its m = N C/G values over all N positions.
// Eq. 2 gives its mean and biased variance,
//
//   mu = (1/m) sum_{k in S_i} x_k,  sigma^2 = (1/m) sum_{k in S_i}
//                                             (x_k - mu)^2 + epsilon,
//
// Eq. 1 normalizes, xhat = (x - mu) / sigma, and Eq. 6 scales and shifts
// per channel, y = gamma xhat + beta (TfcvGroupNorm). With the upstream
// gradient dy and the means over the m values of each set, the gradient
// (TfcvGroupNormGrad) is
//
//   dbeta = sum dy,  dgamma = sum dy xhat,
//   dx = (gamma dy - mean(gamma dy) - xhat mean(gamma dy xhat)) / sigma.
//
// Numerics. The statistics are two-pass: the mean first, then the mean of
// squared deviations from it (never E[x^2] - mu^2, which loses every digit
// when |mu| >> sigma), every sum accumulated in double. To read the map
// from memory only once for them, a work unit takes its rows in blocks of
// about 128 KB and reads each block twice while it is in cache: channel
// sums, then squared deviations from the block's own channel means.
// Blocks, units and channels then merge with the pairwise rule of Chan,
// Golub & LeVeque (1979), M2 = M2_a + M2_b + d^2 n_a n_b / (n_a + n_b)
// with d the difference of the two means, exact in exact arithmetic and as
// stable as one two-pass sum. mu is kept as a float64 output (`mean`, with
// `inv_std` = 1/sigma) for the gradient. In the elementwise passes mu is
// split into mu_hi = (T) mu and mu_lo = mu - mu_hi, and x - mu_hi is formed
// in T first: that difference is exact for values near the mean
// (Sterbenz), so the output keeps full precision relative to sigma even
// when |mu| is 1e4 sigma. Per example and channel, gamma, beta, mu and
// sigma fold into one scale and offset:
//
//   y  = (x - mu_hi) s + o,                s = gamma/sigma,
//                                           o = beta - mu_lo s;
//   dx = dy s - (x - mu_hi) k + e,         k = mean(gamma dy xhat)/sigma^2,
//                                           e = mu_lo k - mean(gamma dy)/sigma.
//
// Passes over the [B, N, C] map from memory: forward 2 (statistics,
// output), backward 2 (sums of dy and dy (x - mu_hi), input gradient).
// Work units are (example, chunk of consecutive positions), at least
// kMinUnits of them, so that a batch of 2 keeps every core busy; each unit
// writes its own per-channel partial sums, which are added up afterwards
// in unit order, so the results do not depend on the number of threads.
// Inner loops run over the contiguous C axis with 4-lane vectors for the
// sums in double and 32-byte vectors for the elementwise passes (SSE2, or
// AVX2 where the CPU has it).

// Dtypes: T = float32 or float64 for x, y, gamma, beta and the gradients;
// mean and inv_std are float64. The layer computes half-precision inputs in
// float32 (it casts before calling). Gradients are registered in Python
// (tfcv_ops/group_norm.py): TfcvGroupNorm's is TfcvGroupNormGrad; that op's
// own gradient (for gradient penalties) goes through the pure-TF twin.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/util/work_sharder.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// The hot loops are compiled twice, for plain x86-64 (SSE2) and for AVX2,
// and the loader picks one per CPU. No FMA: both give the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TFCV_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TFCV_VECTOR_CLONES
#endif

// 32-byte vectors passed by value between the inlined helpers below make
// GCC note an ABI change without AVX; no such vector crosses a call
// outside this file.
#pragma GCC diagnostic ignored "-Wpsabi"

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

// At least this many work units per call when there are positions for
// them, so that a batch of 2 still keeps many cores busy. A constant, not
// the thread count: the units fix the order of the sums, and the results
// must not depend on the machine.
constexpr int64_t kMinUnits = 32;
// Values per cache block of a unit (about 128 KB of float32): the
// statistics read a block twice, the second time from the core's cache.
constexpr int64_t kBlockValues = 1 << 15;
// Rows added into the double partial sums per load/store of the sums.
constexpr int64_t kRowBlock = 4;
// Lanes of the passes that accumulate in double, and bytes of the vectors
// of the purely elementwise passes (8 float32 or 4 float64).
constexpr int64_t kLanes = 4;
constexpr int64_t kWideBytes = 32;
// Outputs of at least this many bytes are written past the caches (they
// would not stay there anyway): that saves reading every line before it
// is overwritten.
constexpr int64_t kStreamBytes = 16 << 20;

template <typename T>
struct Vectors {
  typedef T Data __attribute__((vector_size(kLanes * sizeof(T))));
  typedef double Sum __attribute__((vector_size(kLanes * sizeof(double))));
  typedef T Wide __attribute__((vector_size(kWideBytes)));
  static constexpr int64_t kWideLanes = kWideBytes / sizeof(T);
};

template <typename V, typename T>
V Load(const T* source) {
  V value;
  std::memcpy(&value, source, sizeof(V));
  return value;
}

template <typename V, typename T>
void Store(T* target, const V& value) {
  std::memcpy(target, &value, sizeof(V));
}

// Stores one vector at `target`; with kStream as non-temporal stores
// (`target` 16-byte aligned), which the caller fences.
template <bool kStream, typename V, typename T>
void StoreOutput(T* target, const V& value) {
#if defined(__x86_64__)
  if (kStream) {
    static_assert(sizeof(V) % 16 == 0, "whole 16-byte parts");
    __m128i parts[sizeof(V) / 16];
    std::memcpy(parts, &value, sizeof(V));
    for (size_t i = 0; i < sizeof(V) / 16; ++i) {
      _mm_stream_si128(reinterpret_cast<__m128i*>(target) + i, parts[i]);
    }
    return;
  }
#endif
  Store(target, value);
}

// Makes non-temporal stores visible before the threads report back.
template <bool kStream>
void FenceOutput() {
#if defined(__x86_64__)
  if (kStream) _mm_sfence();
#endif
}

// Whether an output of `values` T at `data`, rows of `channels`, is
// streamed: large, and every row 16-byte aligned.
template <typename T>
bool StreamOutput(const T* data, int64_t values, int64_t channels) {
  return values * static_cast<int64_t>(sizeof(T)) >= kStreamBytes &&
         channels * sizeof(T) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(data) % 16 == 0;
}

// T lanes to double lanes; written per lane, which GCC turns into one
// vcvtps2pd on AVX2 (__builtin_convertvector does not, in GCC 12).
template <typename T>
typename Vectors<T>::Sum Widen(const typename Vectors<T>::Data& value) {
  static_assert(kLanes == 4, "Widen lists four lanes");
  return typename Vectors<T>::Sum{value[0], value[1], value[2], value[3]};
}

// ------------------------------------------------------ per-unit passes ---
// Each takes `rows` consecutive positions of one example, [rows, C]
// row-major, and per-channel vectors of length C.

// Eq. 2, first pass: sum[c] += sum_n x[n, c].
template <typename T>
TFCV_VECTOR_CLONES void AddSums(const T* x, int64_t rows, int64_t channels,
                                double* sum) {
  using Data = typename Vectors<T>::Data;
  using Sum = typename Vectors<T>::Sum;
  for (int64_t n = 0; n < rows; n += kRowBlock) {
    const int64_t block = std::min(kRowBlock, rows - n);
    const T* row = x + n * channels;
    int64_t c = 0;
    for (; c + kLanes <= channels; c += kLanes) {
      Sum total = Load<Sum>(sum + c);
      for (int64_t r = 0; r < block; ++r) {
        total += Widen<T>(Load<Data>(row + r * channels + c));
      }
      Store(sum + c, total);
    }
    for (; c < channels; ++c) {
      for (int64_t r = 0; r < block; ++r) sum[c] += row[r * channels + c];
    }
  }
}

// Eq. 2, second pass: sum[c] += sum_n (x[n, c] - shift[c])^2.
template <typename T>
TFCV_VECTOR_CLONES void AddSquaredDeviations(const T* x, const T* shift,
                                             int64_t rows, int64_t channels,
                                             double* sum) {
  using Data = typename Vectors<T>::Data;
  using Sum = typename Vectors<T>::Sum;
  for (int64_t n = 0; n < rows; n += kRowBlock) {
    const int64_t block = std::min(kRowBlock, rows - n);
    const T* row = x + n * channels;
    int64_t c = 0;
    for (; c + kLanes <= channels; c += kLanes) {
      const Data center = Load<Data>(shift + c);
      Sum total = Load<Sum>(sum + c);
      for (int64_t r = 0; r < block; ++r) {
        const Sum deviation =
            Widen<T>(Load<Data>(row + r * channels + c) - center);
        total += deviation * deviation;
      }
      Store(sum + c, total);
    }
    for (; c < channels; ++c) {
      for (int64_t r = 0; r < block; ++r) {
        const double deviation = row[r * channels + c] - shift[c];
        sum[c] += deviation * deviation;
      }
    }
  }
}

// Eqs. 1 and 6 folded: y[n, c] = (x[n, c] - shift[c]) scale[c] + offset[c].
template <typename T, bool kStream>
TFCV_VECTOR_CLONES void Normalize(const T* x, const T* shift, const T* scale,
                                  const T* offset, int64_t rows,
                                  int64_t channels, T* y) {
  using Wide = typename Vectors<T>::Wide;
  constexpr int64_t kWideLanes = Vectors<T>::kWideLanes;
  for (int64_t n = 0; n < rows; ++n) {
    const T* in = x + n * channels;
    T* out = y + n * channels;
    int64_t c = 0;
    for (; c + kWideLanes <= channels; c += kWideLanes) {
      StoreOutput<kStream>(out + c,
                           (Load<Wide>(in + c) - Load<Wide>(shift + c)) *
                                   Load<Wide>(scale + c) +
                               Load<Wide>(offset + c));
    }
    for (; c < channels; ++c) {
      out[c] = (in[c] - shift[c]) * scale[c] + offset[c];
    }
  }
  FenceOutput<kStream>();
}

// Gradient, first pass: sum_dy[c] += sum_n dy[n, c] and
// sum_dy_dev[c] += sum_n dy[n, c] (x[n, c] - shift[c]); the product of two
// floats is exact in double.
template <typename T>
TFCV_VECTOR_CLONES void AddGradientSums(const T* dy, const T* x,
                                        const T* shift, int64_t rows,
                                        int64_t channels, double* sum_dy,
                                        double* sum_dy_dev) {
  using Data = typename Vectors<T>::Data;
  using Sum = typename Vectors<T>::Sum;
  for (int64_t n = 0; n < rows; n += kRowBlock) {
    const int64_t block = std::min(kRowBlock, rows - n);
    const int64_t start = n * channels;
    int64_t c = 0;
    for (; c + kLanes <= channels; c += kLanes) {
      const Data center = Load<Data>(shift + c);
      Sum total = Load<Sum>(sum_dy + c);
      Sum product = Load<Sum>(sum_dy_dev + c);
      for (int64_t r = 0; r < block; ++r) {
        const int64_t at = start + r * channels + c;
        const Sum upstream = Widen<T>(Load<Data>(dy + at));
        total += upstream;
        product += upstream * Widen<T>(Load<Data>(x + at) - center);
      }
      Store(sum_dy + c, total);
      Store(sum_dy_dev + c, product);
    }
    for (; c < channels; ++c) {
      for (int64_t r = 0; r < block; ++r) {
        const int64_t at = start + r * channels + c;
        const double upstream = dy[at];
        sum_dy[c] += upstream;
        sum_dy_dev[c] += upstream * static_cast<double>(x[at] - shift[c]);
      }
    }
  }
}

// Gradient, second pass:
// dx[n, c] = dy[n, c] scale[c] - (x[n, c] - shift[c]) slope[c] + offset[c].
template <typename T, bool kStream>
TFCV_VECTOR_CLONES void InputGradient(const T* dy, const T* x,
                                      const T* shift, const T* scale,
                                      const T* slope, const T* offset,
                                      int64_t rows, int64_t channels,
                                      T* dx) {
  using Wide = typename Vectors<T>::Wide;
  constexpr int64_t kWideLanes = Vectors<T>::kWideLanes;
  for (int64_t n = 0; n < rows; ++n) {
    const int64_t start = n * channels;
    int64_t c = 0;
    for (; c + kWideLanes <= channels; c += kWideLanes) {
      const Wide deviation =
          Load<Wide>(x + start + c) - Load<Wide>(shift + c);
      StoreOutput<kStream>(
          dx + start + c,
          Load<Wide>(dy + start + c) * Load<Wide>(scale + c) -
              deviation * Load<Wide>(slope + c) + Load<Wide>(offset + c));
    }
    for (; c < channels; ++c) {
      dx[start + c] = dy[start + c] * scale[c] -
                      (x[start + c] - shift[c]) * slope[c] + offset[c];
    }
  }
  FenceOutput<kStream>();
}

// ------------------------------------------------------------- the plan ---

// How [B, N, C] is cut into work units: (example b, chunk of `rows`
// consecutive positions); unit u covers example u / chunks. Units are
// processed in blocks of `block_rows` positions.
struct Plan {
  int64_t batch, positions, channels, groups;
  int64_t rows, chunks, block_rows;

  Plan(int64_t b, int64_t n, int64_t c, int64_t g)
      : batch(b), positions(n), channels(c), groups(g) {
    const int64_t wanted = (kMinUnits + b - 1) / std::max<int64_t>(1, b);
    chunks = std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, n));
    rows = std::max<int64_t>(1, (n + chunks - 1) / chunks);
    chunks = std::max<int64_t>(1, (n + rows - 1) / rows);
    block_rows = std::max<int64_t>(1, kBlockValues / std::max<int64_t>(1, c));
  }

  int64_t units() const { return batch * chunks; }
  int64_t channels_per_group() const { return channels / groups; }
  // m of Eq. 2: the values of one (example, group) set.
  double count() const {
    return static_cast<double>(positions) * channels_per_group();
  }
  int64_t example(int64_t unit) const { return unit / chunks; }
  int64_t first_row(int64_t unit) const { return (unit % chunks) * rows; }
  int64_t row_count(int64_t unit) const {
    return std::min(rows, positions - first_row(unit));
  }
  // Offset of the unit's first value in the [B, N, C] map.
  int64_t start(int64_t unit) const {
    return (example(unit) * positions + first_row(unit)) * channels;
  }

  // Runs work(begin, end) over ranges of units on the CPU worker threads.
  template <typename Work>
  void Run(OpKernelContext* context, int64_t cost_per_value,
           Work work) const {
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(workers->num_threads, workers->workers, units(),
                        cost_per_value * rows * channels, work);
  }

  // total[b, c] = sum over the chunks of example b of partial[unit, c],
  // in chunk order.
  std::vector<double> ChannelTotals(const std::vector<double>& partial) const {
    std::vector<double> total(batch * channels, 0.0);
    for (int64_t b = 0; b < batch; ++b) {
      double* out = total.data() + b * channels;
      for (int64_t k = 0; k < chunks; ++k) {
        const double* in = partial.data() + (b * chunks + k) * channels;
        for (int64_t c = 0; c < channels; ++c) out[c] += in[c];
      }
    }
    return total;
  }
};

// Eq. 2 for the rows of one unit, per channel: sum[c] and squares[c], the
// sum of squared deviations from the unit's channel mean sum[c] / rows.
// Each block is read twice while it is in cache: its sums, then its
// squared deviations from its own channel means (rounded to T, then
// corrected to the exact means); blocks merge with Chan et al.'s rule
// M2 = M2_a + M2_b + delta^2 n_a n_b / (n_a + n_b). `scratch` holds 2 C
// doubles, `center` C values.
template <typename T>
void UnitMoments(const T* x, int64_t rows, int64_t channels,
                 int64_t block_rows, double* sum, double* squares,
                 double* scratch, T* center) {
  double* block_sum = scratch;
  double* block_squares = scratch + channels;
  for (int64_t n = 0; n < rows; n += block_rows) {
    const int64_t block = std::min(block_rows, rows - n);
    const T* values = x + n * channels;
    std::fill(block_sum, block_sum + channels, 0.0);
    AddSums(values, block, channels, block_sum);
    for (int64_t c = 0; c < channels; ++c) {
      center[c] = static_cast<T>(block_sum[c] / block);
    }
    std::fill(block_squares, block_squares + channels, 0.0);
    AddSquaredDeviations(values, center, block, channels, block_squares);
    for (int64_t c = 0; c < channels; ++c) {
      const double mean = block_sum[c] / block;
      const double low = mean - center[c];
      const double m2 = block_squares[c] - block * low * low;
      if (n == 0) {
        sum[c] = block_sum[c];
        squares[c] = m2;
        continue;
      }
      const double delta = mean - sum[c] / n;
      sum[c] += block_sum[c];
      squares[c] += m2 + delta * delta * n * block / (n + block);
    }
  }
}

absl::Status InvalidArgument(const std::string& op, const std::string& text) {
  return absl::InvalidArgumentError(op + ": " + text);
}

// The rules shared by both kernels: x [B, N, C], gamma [C], C a positive
// multiple of groups.
absl::Status CheckMap(const std::string& op, const std::string& name,
                      const TensorShape& x, const TensorShape& gamma,
                      int64_t groups) {
  if (x.dims() != 3) {
    return InvalidArgument(
        op, name + " must be 3-D [B, N, C] (batch, positions, channels), "
                   "received shape " +
                x.DebugString() + "; merge the spatial axes into N.");
  }
  const int64_t channels = x.dim_size(2);
  if (channels < groups || channels % groups != 0) {
    return InvalidArgument(
        op, "the number of channels C = " + std::to_string(channels) +
                " (from " + name + " shape " + x.DebugString() +
                ") must be a positive multiple of groups = " +
                std::to_string(groups) + ".");
  }
  if (gamma.dims() != 1 || gamma.dim_size(0) != channels) {
    return InvalidArgument(op, "gamma must be 1-D [C] with C = " +
                                   std::to_string(channels) +
                                   ", received shape " + gamma.DebugString() +
                                   ".");
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------- forward ---

template <typename T>
class GroupNormOp : public OpKernel {
 public:
  explicit GroupNormOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(context, context->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES(context, epsilon_ >= 0.0f,
                InvalidArgument("TfcvGroupNorm",
                                "epsilon must be >= 0, received " +
                                    std::to_string(epsilon_) + "."));
  }

  void Compute(OpKernelContext* context) override {
    const std::string op = "TfcvGroupNorm";
    const Tensor& x = context->input(0);
    const Tensor& gamma = context->input(1);
    const Tensor& beta = context->input(2);
    OP_REQUIRES_OK(context, CheckMap(op, "x", x.shape(), gamma.shape(),
                                     groups_));
    OP_REQUIRES(context, beta.shape() == gamma.shape(),
                InvalidArgument(op, "beta must have gamma's shape " +
                                        gamma.shape().DebugString() +
                                        ", received " +
                                        beta.shape().DebugString() + "."));
    const Plan plan(x.dim_size(0), x.dim_size(1), x.dim_size(2), groups_);

    Tensor* y = nullptr;
    Tensor* mean = nullptr;
    Tensor* inverse_std = nullptr;
    const TensorShape statistics({plan.batch, groups_});
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(context, context->allocate_output(1, statistics, &mean));
    OP_REQUIRES_OK(context,
                   context->allocate_output(2, statistics, &inverse_std));
    if (plan.batch == 0) return;
    double* mu = mean->flat<double>().data();
    double* inv = inverse_std->flat<double>().data();
    if (plan.positions == 0) {  // empty sets: treated as constant ones
      std::fill(mu, mu + plan.batch * groups_, 0.0);
      std::fill(inv, inv + plan.batch * groups_, 1.0 / std::sqrt(epsilon_));
      return;
    }
    const T* in = x.flat<T>().data();
    const int64_t channels = plan.channels;
    const int64_t size = plan.channels_per_group();

    // Eq. 2 per unit and channel (UnitMoments).
    std::vector<double> partial_sum(plan.units() * channels);
    std::vector<double> partial_squares(plan.units() * channels);
    plan.Run(context, 5, [&](int64_t begin, int64_t end) {
      std::vector<double> scratch(2 * channels);
      std::vector<T> center(channels);
      for (int64_t unit = begin; unit < end; ++unit) {
        UnitMoments(in + plan.start(unit), plan.row_count(unit), channels,
                    plan.block_rows, partial_sum.data() + unit * channels,
                    partial_squares.data() + unit * channels,
                    scratch.data(), center.data());
      }
    });

    // Eq. 2 per set S_i, combining the units in a fixed order (Chan et
    // al.'s rule again): mu = sum / m and m sigma^2 = sum over units and
    // channels of squares + (sum - n mu)^2 / n, n the unit's rows.
    // Then Eqs. 1 and 6 fold into s = gamma/sigma, o = beta - mu_lo s.
    const T* scale_in = gamma.flat<T>().data();
    const T* offset_in = beta.flat<T>().data();
    std::vector<T> shift(plan.batch * channels);
    std::vector<T> scale(plan.batch * channels);
    std::vector<T> offset(plan.batch * channels);
    for (int64_t b = 0; b < plan.batch; ++b) {
      for (int64_t g = 0; g < groups_; ++g) {
        const int64_t set = b * groups_ + g;
        const int64_t first = b * plan.chunks * channels + g * size;
        double total = 0.0;
        for (int64_t k = 0; k < plan.chunks; ++k) {
          const double* sum = partial_sum.data() + first + k * channels;
          for (int64_t c = 0; c < size; ++c) total += sum[c];
        }
        mu[set] = total / plan.count();
        double squares = 0.0;
        for (int64_t k = 0; k < plan.chunks; ++k) {
          const double count = plan.row_count(b * plan.chunks + k);
          const int64_t at = first + k * channels;
          for (int64_t c = 0; c < size; ++c) {
            const double deviation = partial_sum[at + c] - count * mu[set];
            squares += partial_squares[at + c] + deviation * deviation / count;
          }
        }
        inv[set] = 1.0 / std::sqrt(squares / plan.count() + epsilon_);
        const T high = static_cast<T>(mu[set]);
        const double low = mu[set] - high;
        for (int64_t c = g * size; c < (g + 1) * size; ++c) {
          const double factor = scale_in[c] * inv[set];
          shift[b * channels + c] = high;
          scale[b * channels + c] = static_cast<T>(factor);
          offset[b * channels + c] =
              static_cast<T>(offset_in[c] - low * factor);
        }
      }
    }

    // y = (x - mu_hi) s + o.
    T* out = y->flat<T>().data();
    const auto normalize = StreamOutput(out, x.NumElements(), channels)
                               ? Normalize<T, true>
                               : Normalize<T, false>;
    plan.Run(context, 3, [&](int64_t begin, int64_t end) {
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t at = plan.example(unit) * channels;
        normalize(in + plan.start(unit), shift.data() + at,
                  scale.data() + at, offset.data() + at,
                  plan.row_count(unit), channels, out + plan.start(unit));
      }
    });
  }

 private:
  int64_t groups_;
  float epsilon_;
};

// ------------------------------------------------------------ gradient ---

template <typename T>
class GroupNormGradOp : public OpKernel {
 public:
  explicit GroupNormGradOp(OpKernelConstruction* context)
      : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("groups", &groups_));
  }

  void Compute(OpKernelContext* context) override {
    const std::string op = "TfcvGroupNormGrad";
    const Tensor& dy = context->input(0);
    const Tensor& x = context->input(1);
    const Tensor& gamma = context->input(2);
    const Tensor& mean = context->input(3);
    const Tensor& inverse_std = context->input(4);
    OP_REQUIRES_OK(context, CheckMap(op, "x", x.shape(), gamma.shape(),
                                     groups_));
    OP_REQUIRES(context, dy.shape() == x.shape(),
                InvalidArgument(op, "dy must have x's shape " +
                                        x.shape().DebugString() +
                                        ", received " +
                                        dy.shape().DebugString() + "."));
    const TensorShape statistics({x.dim_size(0), groups_});
    OP_REQUIRES(context,
                mean.shape() == statistics &&
                    inverse_std.shape() == statistics,
                InvalidArgument(op, "mean and inv_std must be [B, G] = " +
                                        statistics.DebugString() +
                                        ", received " +
                                        mean.shape().DebugString() + " and " +
                                        inverse_std.shape().DebugString() +
                                        "."));
    const Plan plan(x.dim_size(0), x.dim_size(1), x.dim_size(2), groups_);
    const int64_t channels = plan.channels;
    const int64_t size = plan.channels_per_group();

    Tensor* dx = nullptr;
    Tensor* dgamma = nullptr;
    Tensor* dbeta = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(context,
                   context->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(context,
                   context->allocate_output(2, gamma.shape(), &dbeta));
    T* gamma_gradient = dgamma->flat<T>().data();
    T* beta_gradient = dbeta->flat<T>().data();
    std::fill(gamma_gradient, gamma_gradient + channels, T(0));
    std::fill(beta_gradient, beta_gradient + channels, T(0));
    if (plan.batch == 0 || plan.positions == 0) return;
    const T* upstream = dy.flat<T>().data();
    const T* in = x.flat<T>().data();
    const T* scale_in = gamma.flat<T>().data();
    const double* mu = mean.flat<double>().data();
    const double* inv = inverse_std.flat<double>().data();

    // mu_hi per (example, channel), as in the forward pass.
    std::vector<T> shift(plan.batch * channels);
    for (int64_t b = 0; b < plan.batch; ++b) {
      for (int64_t g = 0; g < groups_; ++g) {
        std::fill_n(shift.data() + b * channels + g * size, size,
                    static_cast<T>(mu[b * groups_ + g]));
      }
    }

    // Per-channel sums over the positions: sum dy, sum dy (x - mu_hi).
    std::vector<double> partial_dy(plan.units() * channels, 0.0);
    std::vector<double> partial_dy_dev(plan.units() * channels, 0.0);
    plan.Run(context, 4, [&](int64_t begin, int64_t end) {
      for (int64_t unit = begin; unit < end; ++unit) {
        AddGradientSums(upstream + plan.start(unit), in + plan.start(unit),
                        shift.data() + plan.example(unit) * channels,
                        plan.row_count(unit), channels,
                        partial_dy.data() + unit * channels,
                        partial_dy_dev.data() + unit * channels);
      }
    });
    const std::vector<double> sum_dy = plan.ChannelTotals(partial_dy);
    std::vector<double> sum_dy_xhat = plan.ChannelTotals(partial_dy_dev);

    // sum dy xhat = (sum dy (x - mu_hi) - mu_lo sum dy) / sigma; then
    // dbeta = sum_b sum dy, dgamma = sum_b sum dy xhat, and the group
    // means of gamma dy and gamma dy xhat fold into s, k and e.
    std::vector<double> gamma_total(channels, 0.0);
    std::vector<double> beta_total(channels, 0.0);
    std::vector<T> scale(plan.batch * channels);
    std::vector<T> slope(plan.batch * channels);
    std::vector<T> offset(plan.batch * channels);
    for (int64_t b = 0; b < plan.batch; ++b) {
      for (int64_t g = 0; g < groups_; ++g) {
        const int64_t set = b * groups_ + g;
        const double low = mu[set] - shift[b * channels + g * size];
        double mean_dy = 0.0;
        double mean_dy_xhat = 0.0;
        for (int64_t c = g * size; c < (g + 1) * size; ++c) {
          const int64_t at = b * channels + c;
          sum_dy_xhat[at] = inv[set] * (sum_dy_xhat[at] - low * sum_dy[at]);
          gamma_total[c] += sum_dy_xhat[at];
          beta_total[c] += sum_dy[at];
          mean_dy += scale_in[c] * sum_dy[at];
          mean_dy_xhat += scale_in[c] * sum_dy_xhat[at];
        }
        mean_dy /= plan.count();
        mean_dy_xhat /= plan.count();
        const double k = mean_dy_xhat * inv[set] * inv[set];
        const double e = low * k - mean_dy * inv[set];
        for (int64_t c = g * size; c < (g + 1) * size; ++c) {
          const int64_t at = b * channels + c;
          scale[at] = static_cast<T>(scale_in[c] * inv[set]);
          slope[at] = static_cast<T>(k);
          offset[at] = static_cast<T>(e);
        }
      }
    }
    for (int64_t c = 0; c < channels; ++c) {
      gamma_gradient[c] = static_cast<T>(gamma_total[c]);
      beta_gradient[c] = static_cast<T>(beta_total[c]);
    }

    // dx = dy s - (x - mu_hi) k + e.
    T* out = dx->flat<T>().data();
    const auto input_gradient =
        StreamOutput(out, x.NumElements(), channels) ? InputGradient<T, true>
                                                     : InputGradient<T, false>;
    plan.Run(context, 4, [&](int64_t begin, int64_t end) {
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t at = plan.example(unit) * channels;
        input_gradient(upstream + plan.start(unit), in + plan.start(unit),
                       shift.data() + at, scale.data() + at,
                       slope.data() + at, offset.data() + at,
                       plan.row_count(unit), channels,
                       out + plan.start(unit));
      }
    });
  }

 private:
  int64_t groups_;
};

// ------------------------------------------------------ shape functions ---

// x [B, N, C] with C a multiple of groups, gamma [C]; returns C.
absl::Status MapShape(InferenceContext* context, const std::string& op,
                      int x_input, int gamma_input, ShapeHandle* x,
                      DimensionHandle* channels) {
  int64_t groups;
  TF_RETURN_IF_ERROR(context->GetAttr("groups", &groups));
  ShapeHandle gamma;
  TF_RETURN_IF_ERROR(context->WithRank(context->input(x_input), 3, x));
  TF_RETURN_IF_ERROR(
      context->WithRank(context->input(gamma_input), 1, &gamma));
  TF_RETURN_IF_ERROR(
      context->Merge(context->Dim(*x, 2), context->Dim(gamma, 0), channels));
  if (context->ValueKnown(*channels)) {
    const int64_t size = context->Value(*channels);
    if (size < groups || size % groups != 0) {
      return InvalidArgument(
          op, "the number of channels C = " + std::to_string(size) +
                  " must be a positive multiple of groups = " +
                  std::to_string(groups) + ".");
    }
  }
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfcvGroupNorm")
    .Attr("T: {float, double}")
    .Attr("groups: int >= 1")
    .Attr("epsilon: float")
    .Input("x: T")
    .Input("gamma: T")
    .Input("beta: T")
    .Output("y: T")
    .Output("mean: double")
    .Output("inv_std: double")
    .SetShapeFn([](InferenceContext* context) {
      ShapeHandle x;
      DimensionHandle channels;
      TF_RETURN_IF_ERROR(
          MapShape(context, "TfcvGroupNorm", 0, 1, &x, &channels));
      ShapeHandle beta;
      TF_RETURN_IF_ERROR(context->WithRank(context->input(2), 1, &beta));
      TF_RETURN_IF_ERROR(
          context->Merge(channels, context->Dim(beta, 0), &channels));
      int64_t groups;
      TF_RETURN_IF_ERROR(context->GetAttr("groups", &groups));
      ShapeHandle y;
      TF_RETURN_IF_ERROR(context->ReplaceDim(x, 2, channels, &y));
      const ShapeHandle statistics =
          context->Matrix(context->Dim(x, 0), groups);
      context->set_output(0, y);
      context->set_output(1, statistics);
      context->set_output(2, statistics);
      return absl::OkStatus();
    });

REGISTER_OP("TfcvGroupNormGrad")
    .Attr("T: {float, double}")
    .Attr("groups: int >= 1")
    .Attr("epsilon: float")
    .Input("dy: T")
    .Input("x: T")
    .Input("gamma: T")
    .Input("mean: double")
    .Input("inv_std: double")
    .Output("dx: T")
    .Output("dgamma: T")
    .Output("dbeta: T")
    .SetShapeFn([](InferenceContext* context) {
      ShapeHandle x;
      DimensionHandle channels;
      TF_RETURN_IF_ERROR(
          MapShape(context, "TfcvGroupNormGrad", 1, 2, &x, &channels));
      ShapeHandle dy;
      TF_RETURN_IF_ERROR(context->WithRank(context->input(0), 3, &dy));
      TF_RETURN_IF_ERROR(context->Merge(x, dy, &x));
      TF_RETURN_IF_ERROR(context->ReplaceDim(x, 2, channels, &x));
      int64_t groups;
      TF_RETURN_IF_ERROR(context->GetAttr("groups", &groups));
      ShapeHandle statistics;
      for (int input : {3, 4}) {
        TF_RETURN_IF_ERROR(
            context->WithRank(context->input(input), 2, &statistics));
        DimensionHandle unused;
        TF_RETURN_IF_ERROR(context->Merge(context->Dim(statistics, 0),
                                          context->Dim(x, 0), &unused));
        TF_RETURN_IF_ERROR(
            context->WithValue(context->Dim(statistics, 1), groups, &unused));
      }
      context->set_output(0, x);
      context->set_output(1, context->Vector(channels));
      context->set_output(2, context->Vector(channels));
      return absl::OkStatus();
    });

#define TFCV_REGISTER_GROUP_NORM_KERNELS(type)                              \
  REGISTER_KERNEL_BUILDER(                                                  \
      Name("TfcvGroupNorm").Device(DEVICE_CPU).TypeConstraint<type>("T"),   \
      GroupNormOp<type>);                                                   \
  REGISTER_KERNEL_BUILDER(Name("TfcvGroupNormGrad")                         \
                              .Device(DEVICE_CPU)                           \
                              .TypeConstraint<type>("T"),                   \
                          GroupNormGradOp<type>)

TFCV_REGISTER_GROUP_NORM_KERNELS(float);
TFCV_REGISTER_GROUP_NORM_KERNELS(double);

#undef TFCV_REGISTER_GROUP_NORM_KERNELS

}  // namespace tfcv
