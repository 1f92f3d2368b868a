// TfcvWignerDMatrix: Wigner small-d matrices d^l(beta) for l = 0..l_max.
//
// Spherical CNNs (Cohen, Geiger, Koehler & Welling, 2018, "Spherical CNNs",
// arXiv:1801.10130), Appendix: the generalized FFT on SO(3) expands a signal
// in Wigner D-functions D^l_{mn}(alpha, beta, gamma) =
// exp(-i m alpha) d^l_{mn}(beta) exp(-i n gamma) (ZYZ Euler angles). This op
// computes the real factor d^l_{mn}(beta).
//
// Convention: d^l_{mn}(beta) = <l m| exp(-i beta J_y) |l n>, the passive
// "quantum mechanics" convention of Wigner, Edmonds and Sakurai, with the
// Condon-Shortley phase. For l = 1 this gives d^1_{1,0} = -sin(beta)/sqrt(2),
// d^1_{0,0} = cos(beta), d^1_{1,1} = (1 + cos(beta)) / 2. Symmetries:
// d^l_{mn} = (-1)^(m-n) d^l_{nm} = d^l_{-n,-m}.
//
// Algorithm: Risbo's recursion (Risbo 1996, J. Geodesy 70:383-396). The
// spin-j representation is the top component of spin-(j - 1/2) times
// spin-1/2, so with n = 2j, a = j + m, b = j + n' (both in 0..n),
// p = cos(beta/2) and q = sin(beta/2):
//
//   n d^(n)_{a,b} =   sqrt(a b)         p d^(n-1)_{a-1,b-1}
//                   - sqrt(a (n-b))     q d^(n-1)_{a-1,b}
//                   + sqrt((n-a) b)     q d^(n-1)_{a,b-1}
//                   + sqrt((n-a) (n-b)) p d^(n-1)_{a,b}
//
// starting from d^(0) = [[1]], with entries outside 0..n-1 taken as zero.
// Every step is a projection of a unitary matrix, so rounding errors grow
// only about linearly with l (about 1e-14 at l = 64) and there are no
// factorials to overflow. Half-integer steps are computed and discarded; the
// integer degrees (n even) are written out. Cost O(l_max^3) per angle.
//
// Output layout: wigner_d has shape [J, sum_l (2l+1)^2]. Degree l occupies
// columns [l(4l^2-1)/3, (l+1)(4(l+1)^2-1)/3), holding the (2l+1) x (2l+1)
// matrix row-major in (m, n) with m, n = -l..l, i.e. entry
// offset(l) + (m + l) * (2l + 1) + (n + l).
//
// Gradients: the gradient with respect to beta is registered in Python
// (tfcv_ops/wigner.py) from the exact derivative
// d/dbeta d^l = -i J_y d^l; l_max is an attribute and has none.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

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
using ::tensorflow::TensorShapeUtils;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Number of packed entries for degrees 0..l_max: sum_l (2l+1)^2.
int64_t PackedSize(int64_t l_max) {
  return (l_max + 1) * (2 * l_max + 1) * (2 * l_max + 3) / 3;
}

// Column where degree l's block starts: sum_{k<l} (2k+1)^2.
int64_t DegreeOffset(int64_t l) { return l * (4 * l * l - 1) / 3; }

// Fills `out` (PackedSize(l_max) entries) with d^l(beta), l = 0..l_max.
// `prev` and `next` are scratch buffers of (2 l_max + 2)^2 entries. Matrices
// are stored with a one-entry zero border above and to the left (entry (a, b)
// at (a + 1) * stride + b + 1), and every entry right of or below the current
// matrix is still zero, so the recursion needs no bounds checks:
// d^(n-1)_{a,b} reads as zero for a or b in {-1, n}.
void WignerDForAngle(double beta, int64_t l_max,
                     const std::vector<double>& sqrt_table,
                     std::vector<double>* prev, std::vector<double>* next,
                     double* out) {
  const double p = std::cos(0.5 * beta);
  const double q = std::sin(0.5 * beta);
  const int64_t stride = 2 * l_max + 2;
  double* previous = prev->data();
  double* current = next->data();
  const double* sqrt_k = sqrt_table.data();

  // d^(0) = [[1]] on zeroed buffers; degree 0 is its own output block.
  std::fill(prev->begin(), prev->end(), 0.0);
  std::fill(next->begin(), next->end(), 0.0);
  previous[stride + 1] = 1.0;
  out[0] = 1.0;

  for (int64_t n = 1; n <= 2 * l_max; ++n) {
    const double inverse_n = 1.0 / static_cast<double>(n);

    // One Risbo step: spin (n-1)/2 -> spin n/2 (see the file comment).
    for (int64_t a = 0; a <= n; ++a) {
      const double* row_above = previous + a * stride + 1;  // d^(n-1)_{a-1,.}
      const double* row_same = row_above + stride;          // d^(n-1)_{a,.}
      double* row_out = current + (a + 1) * stride + 1;
      const double above_p = sqrt_k[a] * p * inverse_n;
      const double above_q = sqrt_k[a] * q * inverse_n;
      const double same_p = sqrt_k[n - a] * p * inverse_n;
      const double same_q = sqrt_k[n - a] * q * inverse_n;
      for (int64_t b = 0; b <= n; ++b) {
        row_out[b] =
            sqrt_k[b] * (above_p * row_above[b - 1] +
                         same_q * row_same[b - 1]) +
            sqrt_k[n - b] * (same_p * row_same[b] - above_q * row_above[b]);
      }
    }

    // Integer degree l = n / 2: copy the (n+1) x (n+1) matrix out row-major.
    if (n % 2 == 0) {
      double* block = out + DegreeOffset(n / 2);
      for (int64_t a = 0; a <= n; ++a) {
        const double* row = current + (a + 1) * stride + 1;
        std::copy(row, row + n + 1, block + a * (n + 1));
      }
    }
    std::swap(previous, current);
  }
}

class WignerDMatrixOp : public OpKernel {
 public:
  explicit WignerDMatrixOp(OpKernelConstruction* context)
      : OpKernel(context) {
    // The attribute's ">= 0" constraint already rejects negative l_max.
    OP_REQUIRES_OK(context, context->GetAttr("l_max", &l_max_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& beta = context->input(0);
    OP_REQUIRES(context, TensorShapeUtils::IsVector(beta.shape()),
                absl::InvalidArgumentError(
                    "TfcvWignerDMatrix: beta must be 1-D [J], received "
                    "shape " +
                    beta.shape().DebugString() + "."));
    const int64_t num_angles = beta.dim_size(0);
    const int64_t packed_size = PackedSize(l_max_);

    Tensor* output = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, TensorShape({num_angles, packed_size}), &output));
    if (num_angles == 0) return;

    std::vector<double> sqrt_table(2 * l_max_ + 1);
    for (int64_t k = 0; k <= 2 * l_max_; ++k) {
      sqrt_table[k] = std::sqrt(static_cast<double>(k));
    }
    const double* beta_data = beta.flat<double>().data();
    double* output_data = output->flat<double>().data();
    const int64_t l_max = l_max_;

    // Angles are independent: shard them over the CPU worker threads.
    auto work = [&](int64_t begin, int64_t end) {
      const int64_t padded_side = 2 * l_max + 2;
      std::vector<double> prev(padded_side * padded_side);
      std::vector<double> next(padded_side * padded_side);
      for (int64_t j = begin; j < end; ++j) {
        WignerDForAngle(beta_data[j], l_max, sqrt_table, &prev, &next,
                        output_data + j * packed_size);
      }
    };
    const int64_t side = 2 * l_max + 1;
    const int64_t cost_per_angle = 10 * side * side * side;
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(workers->num_threads, workers->workers, num_angles,
                        cost_per_angle, work);
  }

 private:
  int64_t l_max_;
};

}  // namespace

REGISTER_OP("TfcvWignerDMatrix")
    .Attr("l_max: int >= 0")
    .Input("beta: double")
    .Output("wigner_d: double")
    .SetShapeFn([](InferenceContext* context) {
      ShapeHandle beta;
      TF_RETURN_IF_ERROR(context->WithRank(context->input(0), 1, &beta));
      int64_t l_max;
      TF_RETURN_IF_ERROR(context->GetAttr("l_max", &l_max));
      context->set_output(
          0, context->Matrix(context->Dim(beta, 0), PackedSize(l_max)));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(
    Name("TfcvWignerDMatrix").Device(DEVICE_CPU), WignerDMatrixOp);

}  // namespace tfcv
