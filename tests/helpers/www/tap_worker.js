// An encoded transform that changes nothing: it keeps a copy of every frame the
// sender hands to its packetizer (video: one encoded picture, H.264 in Annex B;
// audio: one Opus packet) and gives them all to the page when asked.
"use strict";
const frames = {audio: [], video: []};

onrtctransform = (event) => {
  const {readable, writable, options} = event.transformer;
  const copy = new TransformStream({
    transform(frame, controller) {
      frames[options.kind].push({type: frame.type || "audio", data: frame.data.slice(0)});
      controller.enqueue(frame);
    },
  });
  readable.pipeThrough(copy).pipeTo(writable);
};

onmessage = () => postMessage(frames);
