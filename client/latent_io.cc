#include "client/latent_io.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace vae::client {
namespace {

constexpr char kNpyMagic[] = "\x93NUMPY";
constexpr size_t kNpyMagicSize = 6;

// A float in the fewest digits that read back as the same float.
std::string FloatText(float v) {
  char buffer[32];
  for (int precision = 6; precision <= 9; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, v);
    if (std::strtof(buffer, nullptr) == v) break;
  }
  return buffer;
}

nlohmann::json MatrixToJson(const Matrix& m) {
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t r = 0; r < m.rows; ++r) {
    nlohmann::json row = nlohmann::json::array();
    // Through the shortest decimal text: a float stored as a double would print as 0.10000000149011612.
    for (int64_t c = 0; c < m.cols; ++c) row.push_back(std::stod(FloatText(m.at(r, c))));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

// Splits one CSV line (RFC 4180 quoting, no embedded newlines).
std::vector<std::string> CsvFields(absl::string_view line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  return fields;
}

std::string Extension(const std::string& path) {
  return absl::AsciiStrToLower(std::filesystem::path(path).extension().string());
}

nlohmann::json VersionToJson(const ModelVersion& v) {
  return {{"model", v.model},
          {"version", v.version},
          {"generation", v.generation},
          {"epochs_trained", v.epochs_trained},
          {"global_step", v.global_step}};
}

// The "version" object VersionToJson wrote; nullopt for one without "model" and "version" (vae-client before model
// versions wrote only generation, epochs_trained and global_step).
absl::StatusOr<std::optional<ModelVersion>> VersionFromJson(const nlohmann::json& doc, const std::string& path) {
  if (!doc.is_object() || !doc.contains("version")) return std::nullopt;
  const nlohmann::json& v = doc["version"];
  if (!v.is_object() || !v.contains("model") || !v.contains("version")) return std::nullopt;
  if (!v["model"].is_string() || !v["version"].is_number_integer() || v["version"].get<int64_t>() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"version\" is ", v.dump(), "; expected {\"model\": NAME, \"version\": N, ...}"));
  }
  ModelVersion out;
  out.model = v["model"].get<std::string>();
  out.version = v["version"].get<int64_t>();
  for (auto [key, field] : {std::pair{"generation", &out.generation}, std::pair{"epochs_trained", &out.epochs_trained},
                            std::pair{"global_step", &out.global_step}}) {
    if (v.contains(key) && v[key].is_number_integer()) *field = v[key].get<int64_t>();
  }
  return out;
}

absl::StatusOr<Matrix> MatrixFromJson(const nlohmann::json& rows, const std::string& what) {
  if (!rows.is_array() || rows.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected a non-empty array of rows"));
  }
  Matrix m;
  // A single flat row [..] is one code.
  const bool flat = !rows.front().is_array();
  const nlohmann::json all = flat ? nlohmann::json::array({rows}) : rows;
  m.rows = static_cast<int64_t>(all.size());
  m.cols = static_cast<int64_t>(all.front().size());
  for (size_t r = 0; r < all.size(); ++r) {
    const nlohmann::json& row = all[r];
    if (!row.is_array() || static_cast<int64_t>(row.size()) != m.cols) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": row ", r, " has ", row.is_array() ? row.size() : 0, " values; expected ", m.cols));
    }
    for (const nlohmann::json& v : row) {
      if (!v.is_number()) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": row ", r, " holds ", v.dump(), ", not a number"));
      }
      m.values.push_back(v.get<float>());
    }
  }
  if (m.cols == 0) return absl::InvalidArgumentError(absl::StrCat(what, ": rows are empty"));
  return m;
}

absl::StatusOr<Matrix> ReadJsonCodes(const std::string& text, const std::string& path) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  if (doc.is_array()) return MatrixFromJson(doc, path);
  if (doc.is_object()) {
    for (const char* key : {"z", "mu"}) {
      if (doc.contains(key)) return MatrixFromJson(doc[key], absl::StrCat(path, ": \"", key, "\""));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(path, ": expected {\"z\": [[...]]}, {\"mu\": [[...]]} or [[...]]"));
}

absl::StatusOr<Matrix> ReadCsvCodes(const std::string& text, const std::string& path) {
  std::vector<std::vector<std::string>> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripSuffix(line, "\r");
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    lines.push_back(CsvFields(line));
  }
  if (lines.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no rows"));
  std::vector<size_t> columns;
  size_t first_row = 0;
  double unused;
  if (!absl::SimpleAtod(lines[0][0], &unused)) {
    // A header: take the z_* columns, else the mu_* ones.
    first_row = 1;
    for (const char* prefix : {"z_", "mu_"}) {
      for (size_t c = 0; c < lines[0].size(); ++c) {
        if (absl::StartsWith(absl::StripAsciiWhitespace(lines[0][c]), prefix)) columns.push_back(c);
      }
      if (!columns.empty()) break;
    }
    if (columns.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": the header names no z_* or mu_* column"));
    }
  } else {
    for (size_t c = 0; c < lines[0].size(); ++c) columns.push_back(c);
  }
  Matrix m;
  m.cols = static_cast<int64_t>(columns.size());
  for (size_t r = first_row; r < lines.size(); ++r) {
    const std::vector<std::string>& fields = lines[r];
    for (size_t c : columns) {
      float v;
      if (c >= fields.size() || !absl::SimpleAtof(absl::StripAsciiWhitespace(fields[c]), &v)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": line ", r + 1, " column ", c + 1, " is not a number"));
      }
      m.values.push_back(v);
    }
    ++m.rows;
  }
  if (m.rows == 0) return absl::InvalidArgumentError(absl::StrCat(path, ": no rows"));
  return m;
}

// The value of `key` in a .npy header dict ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }").
std::string NpyHeaderValue(const std::string& header, const std::string& key) {
  const std::string needle = "'" + key + "':";
  size_t at = header.find(needle);
  if (at == std::string::npos) return "";
  at += needle.size();
  while (at < header.size() && header[at] == ' ') ++at;
  size_t end = at;
  if (at < header.size() && header[at] == '(') {
    end = header.find(')', at);
    return end == std::string::npos ? "" : header.substr(at, end - at + 1);
  }
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  return std::string(absl::StripAsciiWhitespace(header.substr(at, end - at)));
}

}  // namespace

absl::StatusOr<LatentFormat> LatentFormatOf(const std::string& path) {
  const std::string ext = Extension(path);
  if (ext == ".json") return LatentFormat::kJson;
  if (ext == ".csv") return LatentFormat::kCsv;
  if (ext == ".npy") return LatentFormat::kNpy;
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": unknown extension \"", ext, "\"; expected .json, .csv or .npy"));
}

std::string SigmaNpyPath(const std::string& npy_path) {
  std::filesystem::path p(npy_path);
  const std::string ext = p.extension().string();
  return p.replace_extension().string() + "_sigma" + ext;
}

std::string VersionJsonPath(const std::string& npy_path) {
  std::filesystem::path p(npy_path);
  return p.replace_extension().string() + "_version.json";
}

std::string NpyBytes(const Matrix& m) {
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", m.rows, ", ", m.cols, "), }");
  // Magic (6) + version (2) + header length (2) + header, padded with spaces and ending in '\n', is a multiple of 64.
  const size_t unpadded = kNpyMagicSize + 2 + 2 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out(kNpyMagic, kNpyMagicSize);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(reinterpret_cast<const char*>(m.values.data()), m.values.size() * sizeof(float));
  return out;
}

absl::StatusOr<Matrix> ParseNpy(const std::string& bytes, const std::string& what) {
  if (bytes.size() < 10 || bytes.compare(0, kNpyMagicSize, kNpyMagic, kNpyMagicSize) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a .npy file (bad magic)"));
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len =
        static_cast<unsigned char>(bytes[8]) | (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return absl::InvalidArgumentError(absl::StrCat(what, ": truncated header"));
    header_len = 0;
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    offset = 12;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(what, ": unsupported .npy version ", major));
  }
  if (bytes.size() < offset + header_len) return absl::InvalidArgumentError(absl::StrCat(what, ": truncated header"));
  const std::string header = bytes.substr(offset, header_len);
  const std::string descr = NpyHeaderValue(header, "descr");
  const std::string order = NpyHeaderValue(header, "fortran_order");
  const std::string shape_text = NpyHeaderValue(header, "shape");
  if (descr != "'<f4'" && descr != "'<f8'") {
    return absl::InvalidArgumentError(absl::StrCat(what, ": dtype ", descr, "; expected '<f4' or '<f8'"));
  }
  if (order != "False") return absl::InvalidArgumentError(absl::StrCat(what, ": Fortran order is not supported"));
  std::vector<int64_t> shape;
  for (absl::string_view d : absl::StrSplit(absl::StripSuffix(absl::StripPrefix(shape_text, "("), ")"), ',')) {
    d = absl::StripAsciiWhitespace(d);
    if (d.empty()) continue;
    int64_t v;
    if (!absl::SimpleAtoi(d, &v) || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": bad shape ", shape_text));
    }
    shape.push_back(v);
  }
  Matrix m;
  if (shape.size() == 1) {
    m.rows = 1;
    m.cols = shape[0];
  } else if (shape.size() == 2) {
    m.rows = shape[0];
    m.cols = shape[1];
  } else {
    return absl::InvalidArgumentError(absl::StrCat(what, ": shape ", shape_text, "; expected (N, J) or (J,)"));
  }
  if (m.rows == 0 || m.cols == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": no codes (shape ", shape_text, ")"));
  }
  const size_t element = descr == "'<f4'" ? 4 : 8;
  const size_t count = static_cast<size_t>(m.rows) * static_cast<size_t>(m.cols);
  const size_t data_offset = offset + header_len;
  if (bytes.size() - data_offset != count * element) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", bytes.size() - data_offset, " data bytes; shape ",
                                                   shape_text, " needs ", count * element));
  }
  m.values.resize(count);
  if (element == 4) {
    std::memcpy(m.values.data(), bytes.data() + data_offset, count * 4);
  } else {
    for (size_t i = 0; i < count; ++i) {
      double v;
      std::memcpy(&v, bytes.data() + data_offset + i * 8, 8);
      m.values[i] = static_cast<float>(v);
    }
  }
  return m;
}

absl::Status WriteEncoding(const std::string& path, const Encoding& e) {
  VAE_ASSIGN_OR_RETURN(const LatentFormat format, LatentFormatOf(path));
  const Matrix& mu = e.mu;
  const Matrix& sigma = e.sigma;
  if (mu.rows != sigma.rows || mu.cols != sigma.cols || static_cast<int64_t>(mu.values.size()) != mu.rows * mu.cols ||
      static_cast<int64_t>(sigma.values.size()) != sigma.rows * sigma.cols ||
      static_cast<int64_t>(e.inputs.size()) != mu.rows) {
    return absl::InvalidArgumentError(absl::StrCat("encoding: mu [", mu.rows, ",", mu.cols, "], sigma [", sigma.rows,
                                                   ",", sigma.cols, "] and ", e.inputs.size(), " inputs disagree"));
  }
  switch (format) {
    case LatentFormat::kJson: {
      nlohmann::json doc;
      doc["mu"] = MatrixToJson(mu);
      doc["sigma"] = MatrixToJson(sigma);
      doc["inputs"] = e.inputs;
      doc["latent_dim"] = mu.cols;
      doc["version"] = VersionToJson(e.version);
      return WriteFileAtomically(path, doc.dump() + "\n");
    }
    case LatentFormat::kCsv: {
      std::string out = "input";
      for (const char* name : {"mu_", "sigma_"}) {
        for (int64_t j = 0; j < mu.cols; ++j) absl::StrAppend(&out, ",", name, j);
      }
      out += ",model,version\n";
      const std::string version = absl::StrCat(",", CsvField(e.version.model), ",", e.version.version, "\n");
      for (int64_t r = 0; r < mu.rows; ++r) {
        out += CsvField(e.inputs[r]);
        for (const Matrix* m : {&mu, &sigma}) {
          for (int64_t j = 0; j < m->cols; ++j) absl::StrAppend(&out, ",", FloatText(m->at(r, j)));
        }
        out += version;
      }
      return WriteFileAtomically(path, out);
    }
    case LatentFormat::kNpy: {
      nlohmann::json doc;
      doc["version"] = VersionToJson(e.version);
      doc["inputs"] = e.inputs;
      doc["latent_dim"] = mu.cols;
      // The version first: a reader that finds FILE.npy without it takes the codes as unversioned, never as
      // another version's.
      VAE_RETURN_IF_ERROR(WriteFileAtomically(VersionJsonPath(path), doc.dump() + "\n"));
      VAE_RETURN_IF_ERROR(WriteFileAtomically(path, NpyBytes(mu)));
      return WriteFileAtomically(SigmaNpyPath(path), NpyBytes(sigma));
    }
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<std::optional<ModelVersion>> ReadCodesVersion(const std::string& path) {
  VAE_ASSIGN_OR_RETURN(const LatentFormat format, LatentFormatOf(path));
  switch (format) {
    case LatentFormat::kJson:
    case LatentFormat::kNpy: {
      const std::string json_path = format == LatentFormat::kJson ? path : VersionJsonPath(path);
      if (format == LatentFormat::kNpy && !std::filesystem::exists(json_path)) return std::nullopt;
      VAE_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(json_path, int64_t{1} << 30));
      nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (doc.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(json_path, ": not valid JSON"));
      return VersionFromJson(doc, json_path);
    }
    case LatentFormat::kCsv: {
      VAE_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path, int64_t{1} << 30));
      std::optional<ModelVersion> found;
      int model_column = -1, version_column = -1;
      int line_number = 0;
      for (absl::string_view line : absl::StrSplit(text, '\n')) {
        ++line_number;
        line = absl::StripSuffix(line, "\r");
        if (absl::StripAsciiWhitespace(line).empty()) continue;
        const std::vector<std::string> fields = CsvFields(line);
        if (model_column < 0) {  // the header (or the first row of a file without one)
          for (size_t c = 0; c < fields.size(); ++c) {
            if (fields[c] == "model") model_column = static_cast<int>(c);
            if (fields[c] == "version") version_column = static_cast<int>(c);
          }
          if (model_column < 0 || version_column < 0) return std::nullopt;
          continue;
        }
        ModelVersion row;
        if (static_cast<size_t>(std::max(model_column, version_column)) >= fields.size() ||
            !absl::SimpleAtoi(fields[version_column], &row.version) || row.version < 0) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": line ", line_number, " has no model version"));
        }
        row.model = fields[model_column];
        row.generation = row.version;
        if (found.has_value() && (found->model != row.model || found->version != row.version)) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": line ", line_number, " holds a code of ", row.model,
                                                         " version ", row.version, ", an earlier one of ", found->model,
                                                         " version ", found->version,
                                                         ": codes of different versions cannot be decoded together"));
        }
        found = row;
      }
      return found;
    }
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<Matrix> ReadCodes(const std::string& path) {
  VAE_ASSIGN_OR_RETURN(const LatentFormat format, LatentFormatOf(path));
  VAE_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path, int64_t{1} << 30));
  switch (format) {
    case LatentFormat::kJson:
      return ReadJsonCodes(text, path);
    case LatentFormat::kCsv:
      return ReadCsvCodes(text, path);
    case LatentFormat::kNpy:
      return ParseNpy(text, path);
  }
  return absl::InternalError("unreachable");
}

}  // namespace vae::client
