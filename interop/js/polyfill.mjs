// Load before anything from libp2p: `node --import ./polyfill.mjs peer.mjs ...`.
//
// js-libp2p 3.x calls Promise.withResolvers (ES2024), which Node only ships from
// version 22. Node 20 is what CI has, so define it here when it is missing.
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    }
  })
}
