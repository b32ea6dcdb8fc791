// ESPCN super-resolution in the browser, built by `espcn-hf web SITE_DIR` (espcn_hf/web.py writes site.json).
//
// The page mirrors espcn_hf.upscale(): the image is cut into tiles as image_processing_espcn.tile_windows cuts it
// (cores of site.tile_size LR pixels, each run with receptive_field_radius pixels of real context, clipped at the
// border), so the result equals the untiled one; floats become uint8 by the project's one rule (clamp to [0, 1],
// x255, +0.5, floor); grayscale in gives grayscale out (the BT.601 luma of the RGB output); alpha is upscaled with
// Pillow's bicubic (reproduced exactly below) and put back. Nothing leaves the page: the models and the runtime
// are files of this folder. Where the build has a scale's int8 model (site.models[scale].int8.offered: it loses at
// most 0.1 dB, the Hub upload's rule), #precision offers it; float32 is the default.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

let site; // site.json
let ort; // the onnxruntime-web module
let wantGpu = false; // WebGPU adapter found (and not ?backend=wasm)
let threads = 1;
const sessions = new Map(); // "scale/precision" -> Promise<{session, backend}>

class UserError extends Error {} // a problem with the visitor's file: shown as it is

// ---------------------------------------------------------------------------------------------------------------
// State and messages
// ---------------------------------------------------------------------------------------------------------------

function setState(state, message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
  document.body.dataset.state = state;
}

const count = (n) => n.toLocaleString("en-US");

// ---------------------------------------------------------------------------------------------------------------
// Start-up: the manifest and the runtime
// ---------------------------------------------------------------------------------------------------------------

async function start() {
  const response = await fetch("site.json");
  if (!response.ok) throw new Error(`site.json: HTTP ${response.status}`);
  site = await response.json();
  const { max_input_pixels: inMax, max_output_pixels: outMax } = site.limits;
  $("limits").textContent =
    `Images up to ${count(inMax)} pixels, and ${count(outMax)} pixels after upscaling ` +
    `(x4: up to ${count(Math.floor(outMax / 16))} pixels in). PNG, JPEG, WebP, GIF and BMP files.`;
  const select = $("scale");
  for (const option of [...select.options]) option.disabled = !(option.value in site.models);
  select.value = String(site.default_scale);
  select.addEventListener("change", showPrecisions);
  showPrecisions();
  $("models-links").replaceChildren(
    "Models: ",
    ...Object.values(site.models).flatMap((entry, i) => {
      const node = entry.repo_id ? document.createElement("a") : document.createElement("span");
      node.textContent = entry.repo_id || entry.name;
      if (entry.repo_id) node.href = `https://huggingface.co/${entry.repo_id}`;
      return i ? [", ", node] : [node];
    }),
    " · ",
  );

  const backend = params.get("backend");
  if (backend !== "wasm" && navigator.gpu) {
    try {
      wantGpu = Boolean(await navigator.gpu.requestAdapter());
    } catch {
      wantGpu = false;
    }
  }
  // The WebGPU bundle also runs the WebAssembly provider (its fallback); without WebGPU the smaller WASM bundle.
  ort = await import(wantGpu ? "./ort/ort.webgpu.min.mjs" : "./ort/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
  // Several threads need SharedArrayBuffer, hence a cross-origin isolated page (the Space's custom_headers).
  const asked = Number.parseInt(params.get("threads") || "", 10);
  threads = crossOriginIsolated ? (asked > 0 ? asked : Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  ort.env.wasm.numThreads = threads;

  $("run").disabled = false;
  $("run").addEventListener("click", () => run().catch(() => {}));
  $("split").addEventListener("input", (event) => {
    $("compare").style.setProperty("--split", `${event.target.value}%`);
  });
  $("actual-size").addEventListener("change", (event) => {
    $("viewport").classList.toggle("actual", event.target.checked);
  });
  const note = backend === "webgpu" && !wantGpu ? " WebGPU is not available here: WebAssembly." : "";
  setState("ready", `Ready. Pick an image and a scale.${note}`);
}

// The int8 option of #precision for the chosen scale: enabled with its measured loss where the build has the
// model, else disabled (the reason in its tooltip); a disabled choice falls back to float32.
function showPrecisions() {
  const int8 = site.models[$("scale").value]?.int8;
  const option = $("precision").querySelector('option[value="int8"]');
  option.disabled = !int8?.offered;
  option.textContent = int8?.offered ? int8.label : `int8 (not offered for x${$("scale").value})`;
  if (int8?.offered) {
    const lost = Object.entries(int8.psnr_lost_db).map(([name, db]) => `${db.toFixed(2)} dB on ${name}`);
    option.title =
      `PSNR-Y lost against float32: ${lost.join(", ")}. The speed-up is onnxruntime's, native, on one CPU ` +
      "thread; in the browser it differs.";
  } else {
    option.title = int8?.why || "This build has no int8 models (espcn-hf web --int8-results).";
  }
  if (option.disabled && $("precision").value === "int8") $("precision").value = "fp32";
}

function modelFile(scale, precision) {
  const entry = site.models[scale];
  return precision === "int8" ? entry.int8.file : entry.file;
}

function sessionFor(scale, precision) {
  const key = `${scale}/${precision}`;
  if (!sessions.has(key)) {
    const promise = (async () => {
      const file = modelFile(scale, precision);
      const response = await fetch(file);
      if (!response.ok) throw new Error(`${file}: HTTP ${response.status}`);
      const model = new Uint8Array(await response.arrayBuffer());
      const options = { graphOptimizationLevel: "all" };
      if (wantGpu) {
        try {
          const session = await ort.InferenceSession.create(model, { ...options, executionProviders: ["webgpu"] });
          return { session, backend: "webgpu" };
        } catch (error) {
          console.warn("WebGPU session failed, using WebAssembly:", error);
        }
      }
      const session = await ort.InferenceSession.create(model, { ...options, executionProviders: ["wasm"] });
      return { session, backend: "wasm" };
    })();
    promise.catch(() => sessions.delete(key));
    sessions.set(key, promise);
  }
  return sessions.get(key);
}

// ---------------------------------------------------------------------------------------------------------------
// Reading the file: format, size and kind from the header (before decoding), then exact RGBA pixels
// ---------------------------------------------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes, start, end, crc = 0xffffffff) {
  for (let i = start; i < end; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return crc;
}

const u16be = (b, i) => (b[i] << 8) | b[i + 1];
const u32be = (b, i) => ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
const u16le = (b, i) => b[i] | (b[i + 1] << 8);
const u24le = (b, i) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
const u32le = (b, i) => (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0;
const i32le = (b, i) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
const ascii = (b, i, n) => String.fromCharCode(...b.subarray(i, i + n));

// {format, width, height, gray, alpha, damaged} for PNG, JPEG, GIF, WebP and BMP, or null for other files (the
// browser may still read them; their size is then checked after decoding). gray/alpha follow what Pillow makes of
// the file (grayscale PNG and JPEG; RGBA, LA and palette PNG with transparency, GIF transparency, WebP alpha), so
// the output's kind is the library's; null means "decide from the pixels".
function readHeader(b) {
  const n = b.length;
  if (n >= 33 && u32be(b, 0) === 0x89504e47 && u32be(b, 4) === 0x0d0a1a0a && ascii(b, 12, 4) === "IHDR") {
    const colorType = b[25];
    let pos = 8;
    let transparency = false;
    let damaged = "truncated";
    while (pos + 12 <= n) {
      const length = u32be(b, pos);
      const type = ascii(b, pos + 4, 4);
      if (pos + 12 + length > n) break;
      if ((crc32(b, pos + 4, pos + 8 + length) ^ 0xffffffff) >>> 0 !== u32be(b, pos + 8 + length)) {
        damaged = `damaged (a ${type} chunk fails its checksum)`;
        break;
      }
      if (type === "tRNS") transparency = true;
      pos += 12 + length;
      if (type === "IEND") {
        damaged = null;
        break;
      }
    }
    return {
      format: "PNG",
      width: u32be(b, 16),
      height: u32be(b, 20),
      gray: colorType === 0 || colorType === 4,
      alpha: colorType === 4 || colorType === 6 || (colorType === 3 && transparency),
      damaged,
    };
  }
  if (n >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let pos = 2;
    let size = null;
    while (pos + 4 <= n && b[pos] === 0xff) {
      const marker = b[pos + 1];
      if (marker === 0xff) {
        pos += 1; // fill byte
        continue;
      }
      const sof = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
      if (sof && pos + 10 <= n) size = { height: u16be(b, pos + 5), width: u16be(b, pos + 7), components: b[pos + 9] };
      if (marker === 0xda) break; // start of scan: the entropy-coded data follows
      pos += 2 + u16be(b, pos + 2);
    }
    if (!size) return { format: "JPEG", width: 0, height: 0, gray: false, alpha: false, damaged: "damaged (no frame header)" };
    // The image ends with an EOI marker; in the scan data 0xFF is always followed by 0x00 or a restart marker.
    let end = false;
    for (let i = pos; i + 1 < n; i++) {
      if (b[i] === 0xff && b[i + 1] === 0xd9) {
        end = true;
        break;
      }
    }
    return { format: "JPEG", width: size.width, height: size.height, gray: size.components === 1, alpha: false, damaged: end ? null : "truncated" };
  }
  if (n >= 13 && (ascii(b, 0, 6) === "GIF87a" || ascii(b, 0, 6) === "GIF89a")) {
    let pos = 13 + (b[10] & 0x80 ? 3 * (2 << (b[10] & 7)) : 0);
    let alpha = false;
    while (pos + 2 < n && b[pos] === 0x21) {
      if (b[pos + 1] === 0xf9 && pos + 4 < n) alpha ||= (b[pos + 3] & 1) === 1; // graphic control: transparency
      pos += 2;
      while (pos < n && b[pos] !== 0) pos += b[pos] + 1; // data sub-blocks
      pos += 1;
    }
    return { format: "GIF", width: u16le(b, 6), height: u16le(b, 8), gray: false, alpha, damaged: null };
  }
  if (n >= 30 && ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 4) === "WEBP") {
    const chunk = ascii(b, 12, 4);
    const damaged = u32le(b, 4) + 8 > n ? "truncated" : null; // the RIFF size counts what follows it
    if (chunk === "VP8X") {
      return { format: "WebP", width: u24le(b, 24) + 1, height: u24le(b, 27) + 1, gray: false, alpha: (b[20] & 0x10) !== 0, damaged };
    }
    if (chunk === "VP8L") {
      const bits = u32le(b, 21);
      return { format: "WebP", width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, gray: false, alpha: ((bits >>> 28) & 1) === 1, damaged };
    }
    return { format: "WebP", width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff, gray: false, alpha: false, damaged };
  }
  if (n >= 26 && ascii(b, 0, 2) === "BM") {
    const core = i32le(b, 14) === 12;
    const width = core ? u16le(b, 18) : Math.abs(i32le(b, 18));
    const height = core ? u16le(b, 20) : Math.abs(i32le(b, 22));
    return { format: "BMP", width, height, gray: false, alpha: null, damaged: null };
  }
  return null;
}

function checkSize(width, height, scale) {
  const { max_input_pixels: inMax, max_output_pixels: outMax } = site.limits;
  if (width * height > inMax) {
    throw new UserError(`${width}x${height} = ${count(width * height)} pixels is over the limit of ${count(inMax)} pixels.`);
  }
  const out = width * height * scale * scale;
  if (out > outMax) {
    throw new UserError(
      `${width}x${height} at x${scale} makes ${count(out)} pixels, over the limit of ${count(outMax)} pixels ` +
        "after upscaling: pick a smaller scale or image.",
    );
  }
  if (width < 2 || height < 2) throw new UserError(`${width}x${height}: the image must be at least 2x2 pixels.`);
}

// The decoded pixels, RGBA, not premultiplied. A 2D canvas stores premultiplied colours, which would change the
// (hidden) colours of translucent pixels that the network still sees; images that may have alpha are read back
// through a WebGL texture instead, exactly, with the 2D canvas as the fallback. (Browsers decode a GIF's
// transparent pixels without their palette colour, so next to them a GIF's result differs from the library's.)
function readPixels(bitmap, mayHaveAlpha) {
  const { width, height } = bitmap;
  if (mayHaveAlpha) {
    const exact = readPixelsWebGL(bitmap);
    if (exact) return exact;
  }
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, width, height).data;
}

function readPixelsWebGL(bitmap) {
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(1, 1);
  const gl = canvas.getContext("webgl2", { premultipliedAlpha: false });
  if (!gl) return null;
  try {
    const limit = gl.getParameter(gl.MAX_TEXTURE_SIZE);
    if (width > limit || height > limit) return null;
    const texture = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, texture);
    gl.pixelStorei(gl.UNPACK_PREMULTIPLY_ALPHA_WEBGL, false);
    gl.pixelStorei(gl.UNPACK_COLORSPACE_CONVERSION_WEBGL, gl.NONE);
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, width, height, 0, gl.RGBA, gl.UNSIGNED_BYTE, bitmap);
    const framebuffer = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, framebuffer);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, texture, 0);
    if (gl.checkFramebufferStatus(gl.FRAMEBUFFER) !== gl.FRAMEBUFFER_COMPLETE) return null;
    const pixels = new Uint8ClampedArray(width * height * 4);
    gl.readPixels(0, 0, width, height, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
    return gl.getError() === gl.NO_ERROR ? pixels : null;
  } finally {
    gl.getExtension("WEBGL_lose_context")?.loseContext();
  }
}

async function loadImage(file, scale) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (bytes.length === 0) throw new UserError(`${file.name}: the file is empty.`);
  const header = readHeader(bytes);
  if (header) {
    if (header.damaged) throw new UserError(`${file.name}: the ${header.format} file is ${header.damaged}.`);
    checkSize(header.width, header.height, scale); // before decoding: a huge image costs nothing
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes]), { premultiplyAlpha: "none", colorSpaceConversion: "none" });
  } catch {
    throw new UserError(`${file.name}: this file cannot be read as an image (damaged, or not an image format).`);
  }
  checkSize(bitmap.width, bitmap.height, scale); // EXIF rotation applied; formats without a header check
  const rgba = readPixels(bitmap, header?.alpha !== false);
  let alpha = header?.alpha ?? null;
  if (alpha === null) {
    alpha = false;
    for (let i = 3; i < rgba.length; i += 4) {
      if (rgba[i] !== 255) {
        alpha = true;
        break;
      }
    }
  }
  return { bitmap, rgba, width: bitmap.width, height: bitmap.height, gray: header?.gray ?? false, alpha };
}

// ---------------------------------------------------------------------------------------------------------------
// The network over exact tiles (espcn_hf.image_processing_espcn.tile_windows / run_tiled)
// ---------------------------------------------------------------------------------------------------------------

function* tileWindows(height, width, tile, margin) {
  for (let top = 0; top < height; top += tile) {
    for (let left = 0; left < width; left += tile) {
      const bottom = Math.min(top + tile, height);
      const right = Math.min(left + tile, width);
      yield [top, left, bottom, right, Math.max(top - margin, 0), Math.max(left - margin, 0),
        Math.min(bottom + margin, height), Math.min(right + margin, width)];
    }
  }
}

// uint8 from a float in [0, 1]: clamp, x255, +0.5, floor (espcn_hf.metrics.quantize_uint8; NaN -> 0).
const quantize = (v) => Math.floor((v > 0 ? (v < 1 ? v : 1) : 0) * 255 + 0.5);
const UNIT = Float32Array.from({ length: 256 }, (_, v) => v / 255); // uint8 -> float32, as numpy's x / 255.0
const LUMA = [0.299, 0.587, 0.114].map(Math.fround); // BT.601, in float32 as rgb_to_luma computes it
const clamp01 = (v) => (v > 0 ? (v < 1 ? v : 1) : 0);

async function superResolve(image, scale, precision) {
  const { session, backend } = await sessionFor(scale, precision);
  const entry = site.models[scale];
  const r = entry.upscale_factor;
  const margin = entry.receptive_field_radius;
  const { rgba, width, height, gray } = image;
  const asked = Number.parseInt(params.get("tile") || "", 10);
  let tile = asked >= 8 ? asked : site.tile_size;
  if (tile >= height && tile >= width) tile = Math.max(height, width); // one window: the whole image
  const W = width * r;
  const out = new Uint8ClampedArray(W * height * r * 4);
  const started = performance.now();
  for (const [top, left, bottom, right, t0, l0, b1, r1] of tileWindows(height, width, tile, margin)) {
    const h = b1 - t0;
    const w = r1 - l0;
    const plane = h * w;
    const input = new Float32Array(3 * plane);
    for (let y = 0; y < h; y++) {
      let p = ((t0 + y) * width + l0) * 4;
      for (let x = 0, i = y * w; x < w; x++, i++, p += 4) {
        input[i] = UNIT[rgba[p]];
        input[plane + i] = UNIT[rgba[p + 1]];
        input[2 * plane + i] = UNIT[rgba[p + 2]];
      }
    }
    const feeds = { pixel_values: new ort.Tensor("float32", input, [1, 3, h, w]) };
    const results = await session.run(feeds);
    const output = results.reconstruction;
    const data = output.data;
    const ow = w * r;
    const oplane = h * r * ow;
    for (let yy = (top - t0) * r; yy < (bottom - t0) * r; yy++) {
      const row = (top * r + yy - (top - t0) * r) * W + left * r - (left - l0) * r;
      for (let xx = (left - l0) * r, s = yy * ow + xx; xx < (right - l0) * r; xx++, s++) {
        const d = (row + xx) * 4;
        if (gray) {
          const R = clamp01(data[s]);
          const G = clamp01(data[oplane + s]);
          const B = clamp01(data[2 * oplane + s]);
          const luma = Math.fround(Math.fround(Math.fround(R * LUMA[0]) + Math.fround(G * LUMA[1])) + Math.fround(B * LUMA[2]));
          out[d] = out[d + 1] = out[d + 2] = quantize(luma);
        } else {
          out[d] = quantize(data[s]);
          out[d + 1] = quantize(data[oplane + s]);
          out[d + 2] = quantize(data[2 * oplane + s]);
        }
        out[d + 3] = 255;
      }
    }
    output.dispose?.();
  }
  return { out, ms: performance.now() - started, backend };
}

// ---------------------------------------------------------------------------------------------------------------
// Alpha: Pillow's bicubic resize of an 8-bit plane (Resample.c: a = -0.5, coefficients in 22-bit fixed point, a
// horizontal then a vertical pass, each rounded to 8 bits), so the alpha equals image_processing_espcn.upscale_alpha.
// ---------------------------------------------------------------------------------------------------------------

const PRECISION_BITS = 22;

function cubic(x) {
  x = Math.abs(x);
  if (x < 1) return (1.5 * x - 2.5) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * -0.5;
  return 0;
}

function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 2 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const weights = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let sum = 0;
    for (let x = 0; x < xmax; x++) {
      weights[x] = cubic((x + xmin - center + 0.5) / filterscale);
      sum += weights[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = sum !== 0 ? weights[x] / sum : weights[x];
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

const clip8 = (v) => (v >= 1 << (PRECISION_BITS + 8) ? 255 : v <= 0 ? 0 : v >> PRECISION_BITS);

function resizeBicubic(plane, width, height, outWidth, outHeight) {
  const horizontal = coefficients(width, outWidth);
  const between = new Uint8Array(outWidth * height);
  for (let y = 0; y < height; y++) {
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = horizontal.bounds[2 * xx];
      const xmax = horizontal.bounds[2 * xx + 1];
      const k = xx * horizontal.ksize;
      let ss = 1 << (PRECISION_BITS - 1);
      for (let x = 0; x < xmax; x++) ss += plane[y * width + xmin + x] * horizontal.kk[k + x];
      between[y * outWidth + xx] = clip8(ss);
    }
  }
  const vertical = coefficients(height, outHeight);
  const result = new Uint8Array(outWidth * outHeight);
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = vertical.bounds[2 * yy];
    const ymax = vertical.bounds[2 * yy + 1];
    const k = yy * vertical.ksize;
    for (let xx = 0; xx < outWidth; xx++) {
      let ss = 1 << (PRECISION_BITS - 1);
      for (let y = 0; y < ymax; y++) ss += between[(ymin + y) * outWidth + xx] * vertical.kk[k + y];
      result[yy * outWidth + xx] = clip8(ss);
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// PNG of the result in the library's mode: L, LA, RGB or RGBA, 8 bits (CompressionStream's "deflate" is zlib)
// ---------------------------------------------------------------------------------------------------------------

async function encodePng(rgba, width, height, gray, alpha) {
  const channels = gray ? (alpha ? 2 : 1) : alpha ? 4 : 3;
  const pick = gray ? (alpha ? [0, 3] : [0]) : alpha ? [0, 1, 2, 3] : [0, 1, 2];
  const stride = width * channels;
  const raw = new Uint8Array((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    let i = y * (stride + 1);
    raw[i++] = 1; // filter "Sub": each byte minus the same byte of the pixel to its left (stored modulo 256)
    for (let x = 0, p = y * width * 4; x < width; x++, p += 4) {
      for (const c of pick) raw[i++] = rgba[p + c] - (x ? rgba[p - 4 + c] : 0);
    }
  }
  const stream = new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"));
  const idat = new Uint8Array(await new Response(stream).arrayBuffer());
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, { 1: 0, 2: 4, 3: 2, 4: 6 }[channels], 0, 0, 0], 8);
  const chunk = (type, data) => {
    const bytes = new Uint8Array(12 + data.length);
    const v = new DataView(bytes.buffer);
    v.setUint32(0, data.length);
    for (let i = 0; i < 4; i++) bytes[4 + i] = type.charCodeAt(i);
    bytes.set(data, 8);
    v.setUint32(8 + data.length, (crc32(bytes, 4, 8 + data.length) ^ 0xffffffff) >>> 0);
    return bytes;
  };
  const signature = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return new Blob([signature, chunk("IHDR", header), chunk("IDAT", idat), chunk("IEND", new Uint8Array())], {
    type: "image/png",
  });
}

// ---------------------------------------------------------------------------------------------------------------
// One run: file -> result canvas, bicubic canvas, PNG
// ---------------------------------------------------------------------------------------------------------------

let downloadUrl = null;

async function run() {
  const started = performance.now();
  const file = $("file").files[0];
  const scale = $("scale").value;
  const precision = $("precision").value;
  $("run").disabled = true;
  try {
    if (!file) throw new UserError("Pick an image first.");
    if (!(scale in site.models)) throw new UserError(`No model for x${scale} in this build.`);
    if (precision === "int8" && !site.models[scale].int8?.offered) {
      throw new UserError(`No int8 model for x${scale} in this build: pick float32.`);
    }
    setState("running", `Reading ${file.name}…`);
    const image = await loadImage(file, Number(scale));
    setState("running", `Upscaling ${image.width}x${image.height} x${scale}${precision === "int8" ? " (int8)" : ""}…`);
    const { out, ms, backend } = await superResolve(image, scale, precision);
    const r = site.models[scale].upscale_factor;
    const W = image.width * r;
    const H = image.height * r;
    if (image.alpha) {
      const plane = new Uint8Array(image.width * image.height);
      for (let i = 0; i < plane.length; i++) plane[i] = image.rgba[4 * i + 3];
      const big = resizeBicubic(plane, image.width, image.height, W, H);
      for (let i = 0; i < big.length; i++) out[4 * i + 3] = big[i];
    }
    const result = $("result");
    result.width = W;
    result.height = H;
    result.getContext("2d").putImageData(new ImageData(out, W, H), 0, 0);
    const bicubic = $("bicubic");
    bicubic.width = W;
    bicubic.height = H;
    const context = bicubic.getContext("2d");
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(image.bitmap, 0, 0, W, H);
    image.bitmap.close();

    const png = await encodePng(out, W, H, image.gray, image.alpha);
    if (downloadUrl) URL.revokeObjectURL(downloadUrl);
    downloadUrl = URL.createObjectURL(png);
    const link = $("download");
    link.href = downloadUrl;
    link.download = `${file.name.replace(/\.[^.]*$/, "") || "image"}_x${r}.png`;

    const total = performance.now() - started;
    const engine = backend === "webgpu" ? "WebGPU" : `WebAssembly, ${threads} thread${threads > 1 ? "s" : ""}`;
    $("time").textContent = `${(ms / 1000).toFixed(2)} s for the network (${(total / 1000).toFixed(2)} s in all)`;
    $("backend").textContent = engine;
    $("model").textContent = `model ${site.models[scale].name}${precision === "int8" ? " (int8)" : ""}`;
    $("output").hidden = false;
    Object.assign(document.body.dataset, {
      ms: ms.toFixed(1),
      totalMs: total.toFixed(1),
      backend,
      threads: String(backend === "webgpu" ? 0 : threads),
      precision,
    });
    const kind = image.gray ? (image.alpha ? "grayscale + alpha" : "grayscale") : image.alpha ? "RGBA" : "RGB";
    setState("done", `${image.width}x${image.height} → ${W}x${H} (${kind}).`);
  } catch (error) {
    const message = error instanceof UserError ? error.message : `Upscaling failed: ${error?.message || error}`;
    if (!(error instanceof UserError)) console.error(error);
    setState("error", message, true);
    throw error;
  } finally {
    $("run").disabled = false;
  }
}

start().catch((error) => {
  console.error(error);
  setState("error", `The page could not start: ${error?.message || error}`, true);
});
