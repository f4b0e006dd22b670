// The web page vae-server serves at GET / (server/web/index.html), embedded at build time by
// cmake/embed_file.cmake into a generated web_assets.cc: the binary needs no file and fetches nothing at run time.
#ifndef VAE_SERVER_WEB_WEB_ASSETS_H_
#define VAE_SERVER_WEB_WEB_ASSETS_H_

#include <cstddef>

namespace vae::server::web {

extern const char kIndexHtml[];      // index.html's bytes and a NUL
extern const size_t kIndexHtmlSize;  // the bytes, without the NUL

}  // namespace vae::server::web

#endif  // VAE_SERVER_WEB_WEB_ASSETS_H_
