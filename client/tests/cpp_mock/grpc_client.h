// A declarations-only stand-in for Triton's C++ client header "grpc_client.h" (with the parts of
// "common.h" it includes), so that the C++ snippet in docs/client.md can be type-checked with
// `g++ -fsyntax-only` on machines without Triton's client SDK. Never linked. The signatures
// follow triton-inference-server/client src/c++/library/{grpc_client.h,common.h}; only what the
// snippet uses is declared.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

// From grpc/impl/compression_types.h.
typedef enum {
  GRPC_COMPRESS_NONE = 0,
  GRPC_COMPRESS_DEFLATE,
  GRPC_COMPRESS_GZIP,
  GRPC_COMPRESS_ALGORITHMS_COUNT
} grpc_compression_algorithm;

namespace triton { namespace client {

class Error {
 public:
  explicit Error(const std::string& msg = "");
  const std::string& Message() const { return msg_; }
  bool IsOk() const { return msg_.empty(); }

 private:
  std::string msg_;
};

struct InferOptions {
  explicit InferOptions(const std::string& model_name);
  std::string model_name_;
  std::string model_version_;
  std::string request_id_;
  uint64_t server_timeout_;
  uint64_t client_timeout_;
};

class InferInput {
 public:
  static Error Create(
      InferInput** infer_input, const std::string& name,
      const std::vector<int64_t>& dims, const std::string& datatype);
  Error AppendRaw(const std::vector<uint8_t>& input);
  Error AppendRaw(const uint8_t* input, size_t input_byte_size);
};

class InferRequestedOutput {
 public:
  static Error Create(
      InferRequestedOutput** infer_output, const std::string& name,
      const size_t class_count = 0, const std::string& datatype = "");
};

class InferResult {
 public:
  virtual ~InferResult() = default;
  virtual Error RawData(
      const std::string& output_name, const uint8_t** buf,
      size_t* byte_size) const = 0;
};

typedef std::map<std::string, std::string> Headers;

class InferenceServerGrpcClient {
 public:
  static Error Create(
      std::unique_ptr<InferenceServerGrpcClient>* client,
      const std::string& server_url, bool verbose = false, bool use_ssl = false);

  Error Infer(
      InferResult** result, const InferOptions& options,
      const std::vector<InferInput*>& inputs,
      const std::vector<const InferRequestedOutput*>& outputs =
          std::vector<const InferRequestedOutput*>(),
      const Headers& headers = Headers(),
      grpc_compression_algorithm compression_algorithm = GRPC_COMPRESS_NONE);
};

}}  // namespace triton::client
