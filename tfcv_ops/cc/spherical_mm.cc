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
// Work units are (batch element, output channel); each unit runs one Eigen
// complex matrix product per degree (S^2: [2l+1, C] x [C, 2l+1]) or per
// degree and input channel (SO(3): [2l+1, 2l+1] x [2l+1, 2l+1]^H), sharded
// over the CPU worker threads. Gradients are registered in Python
// (tfcv_ops/spherical_kernels.py).

#include <algorithm>
#include <complex>
#include <cstdint>
#include <string>

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

template <typename Real>
class SphericalMmOp : public OpKernel {
 public:
  using Complex = std::complex<Real>;
  using ColMatrix = Eigen::Matrix<Complex, Eigen::Dynamic, Eigen::Dynamic>;
  using RowMatrix =
      Eigen::Matrix<Complex, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

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
    auto* target = z->flat<Complex>().data();
    if (channels == 0) {
      z->flat<Complex>().setZero();
      return;
    }
    const Complex* x_data = x.flat<Complex>().data();
    const Complex* y_data = y.flat<Complex>().data();
    const bool so3 = so3_;

    // One unit per (batch element e, output channel o).
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t e = unit / outputs;
        const int64_t o = unit % outputs;
        for (int64_t l = 0; l < bandwidth; ++l) {
          const int64_t side = 2 * l + 1;
          Eigen::Map<RowMatrix> block(target + unit * out_size +
                                          DegreeOffset(l),
                                      side, side);
          if (!so3) {
            // [2l+1, C] x [C, 2l+1]: columns c of x and y are strided.
            Eigen::Map<const ColMatrix, 0, Eigen::OuterStride<>> left(
                x_data + e * channels * in_size + l * l, side, channels,
                Eigen::OuterStride<>(in_size));
            Eigen::Map<const ColMatrix, 0, Eigen::OuterStride<>> right(
                y_data + o * in_size + l * l, side, channels,
                Eigen::OuterStride<>(outputs * in_size));
            block.noalias() = left * right.adjoint();
            continue;
          }
          // Sum over c of [2l+1, 2l+1] x [2l+1, 2l+1]^H.
          block.setZero();
          for (int64_t c = 0; c < channels; ++c) {
            Eigen::Map<const RowMatrix> left(
                x_data + (e * channels + c) * in_size + DegreeOffset(l), side,
                side);
            Eigen::Map<const RowMatrix> right(
                y_data + (c * outputs + o) * in_size + DegreeOffset(l), side,
                side);
            block.noalias() += left * right.adjoint();
          }
        }
      }
    };
    const int64_t cost_per_unit =
        8 * channels * (so3 ? in_size * bandwidth : out_size);
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(workers->num_threads, workers->workers,
                        batch * outputs, cost_per_unit, work);
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
