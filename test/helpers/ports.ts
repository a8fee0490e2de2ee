/** Free loopback ports for servers started by tests. */
import { createServer } from "node:net";

/**
 * A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the port the
 * kernel chose, and closes. Another process can take it before the caller binds it, so
 * callers that start external servers retry on "address in use".
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === "string") {
        server.close();
        reject(new Error("freePort: the server has no TCP address"));
        return;
      }
      const { port } = address;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}
