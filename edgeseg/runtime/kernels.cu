// edgeseg GPU pre/post-processing (compiled at run time by pycuda's SourceModule).
// The maths mirrors edgeseg.spec.preprocess / kernels.numpy_argmax / kernels.numpy_overlay:
// the gpu tests compare them.
#include <cuda_fp16.h>

// Half-pixel source coordinates of output index dst, edge clamped (as spec.resize_bilinear), in 32-bit
// maths only (FP64 runs at 1/32-1/64 rate on Jetson): pos = (dst + 0.5) * src_size / dst_size - 0.5 is
// num / den exactly in integers, so lo is an integer division and the weight one correctly rounded float
// division: the reference's float64 weight rounded to float32, not a float32 position's ~1e-4 error.
// num fits an int for sides up to 32767 (kernels.MAX_FRAME_SIDE); den < 2^24 and num - l * den < den are
// exact floats.
__device__ __forceinline__ void bilinear_coords(int dst, int dst_size, int src_size,
                                                int *lo, int *hi, float *w) {
    int num = (2 * dst + 1) * src_size - dst_size;
    int den = 2 * dst_size;
    int l = 0;
    float weight = 0.0f;
    if (num > 0) {  // pos <= 0 clamps to pixel 0, weight 0
        l = num / den;  // num > 0: truncation is floor
        if (l >= src_size - 1) {
            l = src_size - 1;  // at or past the last pixel: clamped, weight 0
        } else {
            weight = __fdiv_rn((float)(num - l * den), (float)den);
        }
    }
    *lo = l;
    *hi = min(l + 1, src_size - 1);
    *w = weight;
}

template <typename T> __device__ __forceinline__ T to_out(float v);
template <> __device__ __forceinline__ float to_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __half to_out<__half>(float v) { return __float2half_rn(v); }
template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }

// uint8 HWC frame (row pitch in bytes) -> normalised CHW tensor of the model size.
// swap != 0 reverses the channel order (BGR frame for an RGB model or the reverse).
template <typename T>
__device__ void preprocess(const unsigned char *src, int src_h, int src_w, int pitch,
                           T *dst, int dst_h, int dst_w, int swap,
                           float m0, float m1, float m2, float s0, float s1, float s2) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;
    int x0, x1, y0, y1;
    float wx, wy;
    bilinear_coords(x, dst_w, src_w, &x0, &x1, &wx);
    bilinear_coords(y, dst_h, src_h, &y0, &y1, &wy);
    const unsigned char *r0 = src + (size_t)y0 * pitch;
    const unsigned char *r1 = src + (size_t)y1 * pitch;
    const float mean[3] = {m0, m1, m2};
    const float inv_std[3] = {s0, s1, s2};
    size_t plane = (size_t)dst_h * dst_w;
    for (int c = 0; c < 3; ++c) {
        int sc = swap ? 2 - c : c;
        float top = __fadd_rn(__fmul_rn((float)r0[x0 * 3 + sc], 1.0f - wx), __fmul_rn((float)r0[x1 * 3 + sc], wx));
        float bottom = __fadd_rn(__fmul_rn((float)r1[x0 * 3 + sc], 1.0f - wx), __fmul_rn((float)r1[x1 * 3 + sc], wx));
        float v = __fadd_rn(__fmul_rn(top, 1.0f - wy), __fmul_rn(bottom, wy));
        dst[c * plane + (size_t)y * dst_w + x] = to_out<T>(__fmul_rn(v - mean[c], inv_std[c]));
    }
}

// Per-pixel argmax over C class planes, as numpy.argmax: the first maximum wins, and the first NaN wins
// over everything (numpy treats NaN as the maximum). A pixel with a NaN logit also adds one to the NaN
// counter, a uint32 after the mask (kernels.nan_counter_offset: the plane rounded up to 4 bytes), which the
// host reads back with the mask and turns into the CPU path's error (kernels.nan_logits_error). The counter
// only grows: the host compares it with its value after the previous frame, so a replayed CUDA graph needs no
// reset.
template <typename T>
__device__ void argmax(const T *logits, int channels, int plane, unsigned char *mask) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= plane) return;
    float best = to_float<T>(logits[i]);
    int best_c = 0;
    bool nan = best != best;
    for (int c = 1; c < channels && !nan; ++c) {
        float v = to_float<T>(logits[(size_t)c * plane + i]);
        if (v != v) { nan = true; best_c = c; }
        else if (v > best) { best = v; best_c = c; }
    }
    mask[i] = (unsigned char)best_c;
    if (nan) {
        atomicAdd((unsigned int *)(mask + (((size_t)plane + 3) & ~(size_t)3)), 1u);
    }
}

extern "C" {

__global__ void preprocess_f32(const unsigned char *src, int src_h, int src_w, int pitch, float *dst,
                               int dst_h, int dst_w, int swap, float m0, float m1, float m2,
                               float s0, float s1, float s2) {
    preprocess<float>(src, src_h, src_w, pitch, dst, dst_h, dst_w, swap, m0, m1, m2, s0, s1, s2);
}

__global__ void preprocess_f16(const unsigned char *src, int src_h, int src_w, int pitch, __half *dst,
                               int dst_h, int dst_w, int swap, float m0, float m1, float m2,
                               float s0, float s1, float s2) {
    preprocess<__half>(src, src_h, src_w, pitch, dst, dst_h, dst_w, swap, m0, m1, m2, s0, s1, s2);
}

__global__ void argmax_f32(const float *logits, int channels, int plane, unsigned char *mask) {
    argmax<float>(logits, channels, plane, mask);
}

__global__ void argmax_f16(const __half *logits, int channels, int plane, unsigned char *mask) {
    argmax<__half>(logits, channels, plane, mask);
}

// Colour overlay at frame resolution: the mask (mask_h x mask_w) is sampled nearest with
// half-pixel centres in integer maths, out = frame * (1 - alpha) + palette[class] * alpha.
__global__ void overlay(const unsigned char *frame, int h, int w, const unsigned char *mask, int mask_h,
                        int mask_w, const unsigned char *palette, int num_colours, float alpha,
                        unsigned char *out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    int my = (int)(((long long)(2 * y + 1) * mask_h) / (2LL * h));
    int mx = (int)(((long long)(2 * x + 1) * mask_w) / (2LL * w));
    int cls = mask[(size_t)my * mask_w + mx];
    if (cls >= num_colours) cls = num_colours - 1;
    for (int c = 0; c < 3; ++c) {
        size_t i = ((size_t)y * w + x) * 3 + c;
        float v = __fadd_rn(__fmul_rn((float)frame[i], 1.0f - alpha), __fmul_rn((float)palette[cls * 3 + c], alpha));
        out[i] = (unsigned char)fminf(255.0f, floorf(v + 0.5f));
    }
}

}  // extern "C"
