// ServerOptions: everything vae-server is configured with. Plain data with defaults; server/main.cc fills it from
// absl flags (the only place flags are parsed), tests fill it directly.
#ifndef VAE_SERVER_SERVER_OPTIONS_H_
#define VAE_SERVER_SERVER_OPTIONS_H_

#include <algorithm>
#include <cstdint>
#include <string>

namespace vae::server {

struct ServerOptions {
  std::string host = "127.0.0.1";    // address to listen on ("0.0.0.0" / "::" for all interfaces)
  int port = 50051;                  // TCP port; 0 picks a free one (VaeServer::Start returns it)
  // The model repository: one folder per model, <model_dir>/<name>/ with model.json and its versions ckpt-<N>.vae
  // (server/model_repository.h). Training writes here; one training server per repository, any number of readers.
  std::string model_dir = "models";
  std::string default_model = "default";  // the model a request without a model name uses (and a flat model_dir's)
  std::string data_dir = "data";     // root of the datasets a TrainRequest may name
  std::string preset = "mnist";      // the default model's fresh weights when it has no version yet
  uint64_t seed = 1;                 // initial weights of that fresh model
  std::string device = "auto";       // auto | cpu | cuda | cuda:N
  int threads = 0;                   // torch intra-op threads of training (process-wide); 0: one per core
  int inference_threads = 1;         // torch intra-op threads of each inference call (calls run concurrently)
  int max_message_mb = 64;           // largest gRPC message received or sent, MiB
  int max_batch = 1024;              // most images / codes one request may carry (and Sample's largest count)
  // Largest encoded (PNG/JPEG) image a request may carry, as width x height declared in its header, checked before
  // anything is decoded. 0: derived from the served model (AutoMaxImagePixels below).
  int64_t max_image_pixels = 0;
  int keep_versions = 3;  // publishing a version deletes the model's versions older than the newest N, unless labelled
  // In-memory versions (their weights), MiB; the least recently used ones are dropped beyond it and loaded again on
  // demand. A version in use stays alive until its requests finish, and the newest one loaded always stays. 0: no limit.
  int64_t max_loaded_mb = 4096;
  // Seconds between rescans of model_dir (versions and model.json written by another process become servable,
  // deleted ones are unloaded). 0: no rescans.
  double poll_interval_s = 2;
  // Dynamic batching: concurrent Encode/Decode/Reconstruct calls on the same weights share one model call (see
  // server/batcher.h). A lone request never waits; a batch waits at most batch_timeout_us for requests already
  // being decoded. Requests of 64+ rows are a batch already and run on their own. Queued requests hold no thread
  // (the thread running batches answers them), so under many small concurrent calls batches grow by themselves.
  // Worth what the model costs per call (BENCHMARKS.md §5): the seed preset serves 9x the images at 32 clients x 1
  // image; for mnist (~17 us per call against a ~200 us round trip) on and off are within noise.
  bool enable_batching = true;
  int64_t batch_timeout_us = 500;  // longest a batch waits for requests on their way
  int max_queue = 256;             // requests waiting for a batch; more get RESOURCE_EXHAUSTED
  // TLS (PEM files). With a certificate and its key the server speaks TLS only; with a client CA as well it also
  // requires every client to present a certificate signed by that CA (mutual TLS). All empty: plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Bearer-token authentication (server/auth.h). The tokens themselves, not paths: main.cc reads them from
  // --auth_token_file / --auth_readonly_token_file or $VAE_AUTH_TOKEN / $VAE_AUTH_READONLY_TOKEN. Empty: no
  // authentication. With auth_token, every VaeService call needs "authorization: Bearer <auth_token>";
  // auth_readonly_token (needs auth_token) may call everything but Train and the
  // repository's admin calls (SetLabel, DeleteVersion, DeleteModel). Health and reflection stay open.
  std::string auth_token;
  std::string auth_readonly_token;
};

// max_image_pixels = 0: kAutoImagePixelsPerModelPixel times the model's H x W, and never under kMinAutoImagePixels (a
// 1024 x 1024 image) -- room to send larger images for the server to resize (ImageBatch.resize), while a
// decompression bomb (a 388 KB PNG declaring 20000 x 20000) is refused. Decoding one image allocates its pixels x
// channels bytes, once per request being decoded at a time.
inline constexpr int64_t kAutoImagePixelsPerModelPixel = 16;
inline constexpr int64_t kMinAutoImagePixels = int64_t{1} << 20;

// The encoded-image limit for a model of input height x width, given --max_image_pixels (`configured`, 0: auto).
inline int64_t MaxImagePixels(int64_t configured, int64_t height, int64_t width) {
  if (configured > 0) return configured;
  return std::max(kMinAutoImagePixels, kAutoImagePixelsPerModelPixel * height * width);
}
inline int64_t MaxImagePixels(const ServerOptions& options, int64_t height, int64_t width) {
  return MaxImagePixels(options.max_image_pixels, height, width);
}

}  // namespace vae::server

#endif  // VAE_SERVER_SERVER_OPTIONS_H_
