// Float64 reference forward of a timm ViT (tests only). Straight loops, no tricks: readable over fast.
#include "reference_vit.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace vtprune::test {
namespace {

using Matrix = std::vector<double>;  // row-major

// y[t][o] = b[o] + sum_i W[o][i] x[t][i]   (torch Linear: W is [out x in])
Matrix linear(const Matrix& x, int rows, int in, const Matrix& w, const Matrix& b, int out) {
  Matrix y(static_cast<size_t>(rows) * out);
  for (int r = 0; r < rows; ++r) {
    const double* xr = &x[static_cast<size_t>(r) * in];
    for (int o = 0; o < out; ++o) {
      const double* wr = &w[static_cast<size_t>(o) * in];
      double s = b[o];
      for (int i = 0; i < in; ++i) s += wr[i] * xr[i];
      y[static_cast<size_t>(r) * out + o] = s;
    }
  }
  return y;
}

Matrix layer_norm(const Matrix& x, int rows, int dim, const Matrix& w, const Matrix& b, double eps) {
  Matrix y(x.size());
  for (int r = 0; r < rows; ++r) {
    const double* xr = &x[static_cast<size_t>(r) * dim];
    double mean = 0, var = 0;
    for (int i = 0; i < dim; ++i) mean += xr[i];
    mean /= dim;
    for (int i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= dim;
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int i = 0; i < dim; ++i) y[static_cast<size_t>(r) * dim + i] = (xr[i] - mean) * inv * w[i] + b[i];
  }
  return y;
}

}  // namespace

ReferenceVit::ReferenceVit(const std::filesystem::path& path, int heads, double eps) : heads_(heads), eps_(eps) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("reference: cannot open " + path.string());
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);  // little-endian host
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  const auto j = nlohmann::json::parse(header);
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") continue;
    if (v.at("dtype") != "F32") throw std::runtime_error("reference: only F32 tensors, " + name + " is not");
    const auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
    std::vector<float> raw((off[1] - off[0]) / 4);
    in.seekg(static_cast<std::streamoff>(8 + header_len + off[0]));
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(off[1] - off[0]));
    tensors_[name] = std::vector<double>(raw.begin(), raw.end());
    if (name == "patch_embed.proj.weight") {
      const auto shape = v.at("shape").get<std::vector<int>>();
      dim_ = shape[0];
      patch_ = shape[2];
    }
    if (name == "pos_embed") grid_ = static_cast<int>(std::lround(std::sqrt(v.at("shape")[1].get<int>() - 1)));
    if (name == "blocks.0.mlp.fc1.weight") ff_ = v.at("shape")[0].get<int>();
    if (name == "head.weight") classes_ = v.at("shape")[0].get<int>();
  }
  while (tensors_.count("blocks." + std::to_string(depth_) + ".norm1.weight")) ++depth_;
}

const std::vector<double>& ReferenceVit::t(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) throw std::runtime_error("reference: missing " + name);
  return it->second;
}

ReferenceVit::Result ReferenceVit::forward(const std::vector<float>& image, int tap_layer) const {
  const int D = dim_, P = patch_, G = grid_, S = G * P, N = G * G, T = N + 1, H = heads_, dh = D / H;
  Result result;
  // Patch embedding (conv stride P) + CLS + positions.
  Matrix x(static_cast<size_t>(T) * D);
  const auto& pw = t("patch_embed.proj.weight");  // [D][3][P][P]
  const auto& pb = t("patch_embed.proj.bias");
  const auto& pos = t("pos_embed");
  const auto& cls = t("cls_token");
  for (int i = 0; i < D; ++i) x[i] = cls[i] + pos[i];
  for (int gy = 0; gy < G; ++gy) {
    for (int gx = 0; gx < G; ++gx) {
      const int tok = 1 + gy * G + gx;
      for (int o = 0; o < D; ++o) {
        double s = pb[o];
        for (int c = 0; c < 3; ++c) {
          for (int ky = 0; ky < P; ++ky) {
            for (int kx = 0; kx < P; ++kx) {
              s += pw[((static_cast<size_t>(o) * 3 + c) * P + ky) * P + kx] *
                   image[(static_cast<size_t>(c) * S + gy * P + ky) * S + gx * P + kx];
            }
          }
        }
        x[static_cast<size_t>(tok) * D + o] = s + pos[static_cast<size_t>(tok) * D + o];
      }
    }
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  for (int il = 0; il < depth_; ++il) {
    const std::string p = "blocks." + std::to_string(il) + ".";
    Matrix h = layer_norm(x, T, D, t(p + "norm1.weight"), t(p + "norm1.bias"), eps_);
    const Matrix qkv = linear(h, T, D, t(p + "attn.qkv.weight"), t(p + "attn.qkv.bias"), 3 * D);  // [T][3D]
    Matrix attn_out(static_cast<size_t>(T) * D, 0.0);
    if (il == tap_layer) {
      result.attention.assign(static_cast<size_t>(H) * T * T, 0.0);
      result.keys.resize(static_cast<size_t>(T) * D);
      result.cls_query.resize(D);
      for (int tk = 0; tk < T; ++tk) {
        for (int i = 0; i < D; ++i) result.keys[static_cast<size_t>(tk) * D + i] = qkv[static_cast<size_t>(tk) * 3 * D + D + i];
      }
      for (int i = 0; i < D; ++i) result.cls_query[i] = qkv[i];
    }
    std::vector<double> row(T);
    for (int hh = 0; hh < H; ++hh) {
      for (int q = 0; q < T; ++q) {
        double mx = -1e300;
        for (int k = 0; k < T; ++k) {
          double s = 0;
          for (int i = 0; i < dh; ++i) {
            s += qkv[static_cast<size_t>(q) * 3 * D + hh * dh + i] * qkv[static_cast<size_t>(k) * 3 * D + D + hh * dh + i];
          }
          row[k] = s * scale;
          mx = std::max(mx, row[k]);
        }
        double sum = 0;
        for (int k = 0; k < T; ++k) sum += (row[k] = std::exp(row[k] - mx));
        for (int k = 0; k < T; ++k) row[k] /= sum;
        if (il == tap_layer) {
          std::memcpy(&result.attention[(static_cast<size_t>(hh) * T + q) * T], row.data(), sizeof(double) * T);
        }
        for (int i = 0; i < dh; ++i) {
          double s = 0;
          for (int k = 0; k < T; ++k) s += row[k] * qkv[static_cast<size_t>(k) * 3 * D + 2 * D + hh * dh + i];
          attn_out[static_cast<size_t>(q) * D + hh * dh + i] = s;
        }
      }
    }
    const Matrix proj = linear(attn_out, T, D, t(p + "attn.proj.weight"), t(p + "attn.proj.bias"), D);
    for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
    h = layer_norm(x, T, D, t(p + "norm2.weight"), t(p + "norm2.bias"), eps_);
    Matrix f = linear(h, T, D, t(p + "mlp.fc1.weight"), t(p + "mlp.fc1.bias"), ff_);
    for (double& v : f) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));  // exact GELU
    const Matrix f2 = linear(f, T, ff_, t(p + "mlp.fc2.weight"), t(p + "mlp.fc2.bias"), D);
    for (size_t i = 0; i < x.size(); ++i) x[i] += f2[i];
  }
  const Matrix cls_row(x.begin(), x.begin() + D);
  const Matrix normed = layer_norm(cls_row, 1, D, t("norm.weight"), t("norm.bias"), eps_);
  result.logits = linear(normed, 1, D, t("head.weight"), t("head.bias"), classes_);
  return result;
}

}  // namespace vtprune::test
