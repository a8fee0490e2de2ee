// HEALTHCHECK of the trueidle images: GET /healthz on this container's HTTP port and exit 0 on
// a 200, else 1. The address is TRUEIDLE_HTTP_LISTEN, else 127.0.0.1 and the port given as the
// argument; a wildcard host (0.0.0.0, ::) is asked on loopback. HTTPS when
// TRUEIDLE_HTTP_TLS_CERT is set, without verifying the certificate: the peer is this container.
import http from "node:http";
import https from "node:https";

const listen = process.env.TRUEIDLE_HTTP_LISTEN || `127.0.0.1:${process.argv[2] ?? "9745"}`;
const colon = listen.lastIndexOf(":");
let host = listen.slice(0, colon).replace(/^\[|\]$/g, "");
if (host === "" || host === "0.0.0.0" || host === "::") host = "127.0.0.1";
const port = Number(listen.slice(colon + 1));
const tls = Boolean(process.env.TRUEIDLE_HTTP_TLS_CERT);

const req = (tls ? https : http).get(
  { host, port, path: "/healthz", timeout: 4000, rejectUnauthorized: false },
  (res) => {
    res.resume();
    if (res.statusCode !== 200) process.stderr.write(`/healthz answered ${res.statusCode}\n`);
    process.exit(res.statusCode === 200 ? 0 : 1);
  },
);
req.on("timeout", () => req.destroy(new Error(`no answer from ${host}:${port} within 4 s`)));
req.on("error", (err) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
