// The official `openai` Node SDK, unchanged, against the gateway: create a video from a local image file,
// poll it, download its MP4, then extend it by reference ({id}), which the Node SDK's multipart encoding
// sends as a `video[id]` form field. Usage: node openai_node_video.cjs BASE_URL IMAGE OUT_DIR (the token in
// SVD_TRITON_TOKEN, the SDK found through NODE_PATH); prints the finished Video objects as JSON.
const fs = require("node:fs");
const path = require("node:path");
const { default: OpenAI, toFile } = require("openai");

const [baseURL, image, outDir] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: process.env.SVD_TRITON_TOKEN, maxRetries: 0 });
const small = { num_inference_steps: 2, num_frames: 5, fps: 5, video_quality: 0 };

async function finished(video) {
  while (video.status === "queued" || video.status === "in_progress") {
    await new Promise((resolve) => setTimeout(resolve, 100));
    video = await client.videos.retrieve(video.id);
  }
  return video;
}

async function download(video, name) {
  const response = await client.videos.downloadContent(video.id);
  fs.writeFileSync(path.join(outDir, name), Buffer.from(await response.arrayBuffer()));
}

async function main() {
  const created = await client.videos.create({
    prompt: "the square drifts", seconds: "4", size: "128x64", ...small,
    input_reference: await toFile(fs.createReadStream(image), path.basename(image), { type: "image/png" }),
  });
  const video = await finished(created);
  await download(video, "video.mp4");
  const extended = await finished(await client.videos.extend({ video: { id: video.id }, prompt: "and on", seconds: "4" }));
  await download(extended, "extended.mp4");
  let refused = null;
  try {
    await client.videos.create({ prompt: "x", size: "99999x1" });
  } catch (error) {
    refused = { kind: error.constructor.name, status: error.status, param: error.param };
  }
  console.log(JSON.stringify({ video, extended, refused }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
