// Float math the compiler can vectorise (no libm calls), shared by the hand-written kernels of the MLP training
// step (mlp_step.cc) and of MLP inference (mlp_inference.cc). Internal to vae::model.
#ifndef VAE_MODEL_FAST_MATH_H_
#define VAE_MODEL_FAST_MATH_H_

#include <cstdint>
#include <cstring>

namespace vae::internal {

// exp(-a) for a >= 0, written so the compiler vectorises it (no libm call): Cody-Waite range reduction to
// r in [-ln2/2, ln2/2] and a degree-7 Taylor polynomial (truncation < 1e-8 relative, so ~1 ulp in float).
// a is clamped to 87, where exp(-a) ~ 1.6e-38 is already negligible next to 1 in every use below.
inline float ExpNeg(float a) {
  a = a < 87.0f ? a : 87.0f;
  const float t = -a * 1.44269504088896341f;        // -a / ln 2
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick), |t| < 2^22
  float r = -a - n * 0.693359375f;                  // ln 2, high part (exact product for |n| < 2^15)
  r = r - n * -2.12194440e-4f;                      // ln 2, low part
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n >= -126 because a <= 87
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// sigmoid(x) from e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e) below; no branch on the data.
inline float Sigmoid(float x) {
  const float e = ExpNeg(x < 0.0f ? -x : x);
  return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

// tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|); absolute error ~1e-7.
inline float Tanh(float x) {
  const float e = ExpNeg(x < 0.0f ? -2.0f * x : 2.0f * x);
  const float t = (1.0f - e) / (1.0f + e);
  return x < 0.0f ? -t : t;
}

}  // namespace vae::internal

#endif  // VAE_MODEL_FAST_MATH_H_
