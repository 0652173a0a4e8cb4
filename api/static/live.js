// The Live tab: the microphone streamed to /v1/realtime?intent=transcription (OpenAI's Realtime API, transcription
// form) as PCM16 mono at 24 kHz, and each item's text shown as it comes: partial (muted) and then final.
"use strict";

{
  const RATE = 24000;  // the session's rate; the server takes 16000 too
  const SEND_EVERY = RATE / 10;  // samples: an append about every 100 ms
  const DRAIN_MS = 1500;  // after Stop, how long the last events may take
  const CLOSED = {
    1006: "The connection to the server was lost.",
    1011: "The server failed; start again.",
    1012: "The live worker stopped; start again.",
    4400: "The server refused the session.",
    4401: "The API key was refused: fill in a valid key above.",
    4408: "The session was closed: nothing was received for too long, or it lasted too long.",
    4429: "Too many live sessions for this key, or the audio came faster than real time.",
    4503: "No live worker is available now; try again later.",
  };

  const byId = (id) => document.getElementById(id);
  const startButton = byId("live-start");
  const stopButton = byId("live-stop");
  const text = byId("live-text");
  let session = null;  // the running one: {socket, audio, items, ...}

  function status(message, isError = false) {
    byId("live-status").textContent = message;
    byId("live-status").className = isError ? "error" : "";
  }

  function running(yes) {
    startButton.disabled = yes;
    stopButton.disabled = !yes;
    byId("live-language").disabled = yes;
    (yes ? stopButton : startButton).focus();
  }

  byId("live-form").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    if (!session) start();
  });
  stopButton.addEventListener("click", () => { if (session) stop(session); });

  async function start() {
    if (!navigator.mediaDevices || !window.WebSocket) {
      return status("This page needs HTTPS (or localhost) for the microphone.", true);
    }
    const current = { socket: null, audio: null, items: new Map(), ready: false, stopping: false, error: null };
    session = current;
    running(true);
    text.replaceChildren();
    status("Asking for the microphone…");
    try {
      current.audio = await capture((samples) => send(current, samples));  // sends once the session is ready
    } catch (error) {
      status(`No microphone: ${error.message}`, true);
      return finish(current);
    }
    if (current.stopping) return current.audio.stop();  // Stop was pressed meanwhile
    status("Connecting…");
    const key = byId("key").value.trim();
    const url = `${location.protocol === "https:" ? "wss://" : "ws://"}${location.host}/v1/realtime?intent=transcription`;
    const socket = key ? new WebSocket(url, ["realtime", `openai-insecure-api-key.${key}`]) : new WebSocket(url);
    current.socket = socket;
    socket.onmessage = (message) => receive(current, JSON.parse(message.data));
    socket.onclose = (closed) => {
      if (session !== current) return;
      if (current.stopping) status("Stopped.");
      else {
        const known = CLOSED[closed.code] || (closed.code === 1000 || closed.code === 1005
          ? "The server ended the session." : `The session ended (code ${closed.code}).`);
        const detail = current.error ? ` (${current.error})` : "";
        status(`${known}${detail}`, closed.code !== 1000 && closed.code !== 1005);
      }
      finish(current);
    };
  }

  function receive(current, event) {
    switch (event.type) {
      case "session.created": {
        const language = byId("live-language").value.trim() || null;
        current.socket.send(JSON.stringify({
          type: "session.update",
          session: {
            type: "transcription",
            audio: {
              input: {
                format: { type: "audio/pcm", rate: RATE },
                transcription: { model: "whisper-1", language },
                turn_detection: { type: "server_vad", threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 },
              },
            },
          },
        }));
        current.ready = true;
        if (!current.stopping) status("Listening: speak now.");
        break;
      }
      case "input_audio_buffer.speech_started":
        current.speaking = true;
        item(current, event.item_id);
        if (!current.stopping) status("Hearing speech…");
        break;
      case "input_audio_buffer.speech_stopped":
        current.speaking = false;
        if (!current.stopping) status("Listening: speak now.");
        break;
      case "conversation.item.input_audio_transcription.delta":
        item(current, event.item_id).textContent += event.delta;
        break;
      case "conversation.item.input_audio_transcription.completed": {
        const line = item(current, event.item_id);
        const transcript = (event.transcript || "").trim();
        if (transcript) {
          line.textContent = transcript;
          line.className = "final";
        } else line.remove();  // nothing said after all
        break;
      }
      case "conversation.item.input_audio_transcription.failed":
        item(current, event.item_id).className = "failed";
        status(`An item failed: ${event.error?.message || "unknown error"}`, true);
        break;
      case "error":
        current.error = event.error?.message || "unknown error";
        status(`Error: ${event.error?.code ? `${event.error.code}: ` : ""}${current.error}`, true);
        break;
    }
  }

  // The paragraph of an item, made the first time the item is heard of.
  function item(current, itemId) {
    let line = current.items.get(itemId);
    if (!line) {
      line = document.createElement("p");
      line.className = "partial";
      line.dataset.item = itemId;
      current.items.set(itemId, line);
      text.append(line);
    }
    return line;
  }

  // PCM16 little-endian samples (a queue of them), sent as base64 every SEND_EVERY samples.
  function send(current, samples) {
    if (!current.ready || current.stopping || current.socket.readyState !== WebSocket.OPEN) return;
    current.pending = current.pending ? concat(current.pending, samples) : samples;
    while (current.pending.length >= SEND_EVERY) {
      const chunk = current.pending.subarray(0, SEND_EVERY);
      current.pending = current.pending.subarray(SEND_EVERY);
      current.socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(pcm16(chunk)) }));
    }
  }

  function stop(current) {
    if (current.stopping) return;
    current.stopping = true;
    stopButton.disabled = true;
    current.audio?.stop();
    const socket = current.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      socket?.close();
      status("Stopped.");
      return finish(current);
    }
    // A sentence cut off by Stop is committed, so that it gets its final text too.
    if (current.speaking) socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
    status("Stopping: waiting for the last words…");
    setTimeout(() => socket.close(1000), DRAIN_MS);
  }

  function finish(current) {
    current.stopping = true;
    current.audio?.stop();
    for (const line of current.items.values()) if (line.className === "partial" && !line.textContent) line.remove();
    if (session === current) {
      session = null;
      running(false);
    }
  }

  // -- audio ------------------------------------------------------------------------------------------------------

  // The processor runs on the audio thread: it downmixes to mono and posts a block of samples at a time.
  const PROCESSOR = `
    class Capture extends AudioWorkletProcessor {
      constructor() {
        super();
        this.block = new Float32Array(2048);
        this.filled = 0;
      }
      process(inputs) {
        const channels = inputs[0];
        if (channels && channels.length) {
          for (let i = 0; i < channels[0].length; i++) {
            let sum = 0;
            for (const channel of channels) sum += channel[i];
            this.block[this.filled++] = sum / channels.length;
            if (this.filled === this.block.length) {
              this.port.postMessage(this.block, [this.block.buffer]);
              this.block = new Float32Array(2048);
              this.filled = 0;
            }
          }
        }
        return true;
      }
    }
    registerProcessor("whisperq-capture", Capture);
  `;

  // Capture the microphone; `onSamples` gets Float32 mono samples at RATE. Returns {stop()}.
  async function capture(onSamples) {
    const context = new AudioContext();  // made before any await, while the click still counts as a gesture
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      await context.resume();
    } catch (error) {
      context.close();
      throw error;
    }
    const source = context.createMediaStreamSource(stream);
    const silent = context.createGain();  // the graph must reach the destination to run, but nothing is heard
    silent.gain.value = 0;
    silent.connect(context.destination);
    const resample = resampler(context.sampleRate, RATE);
    const deliver = (mono) => onSamples(resample(mono));
    let node;
    try {
      const module = URL.createObjectURL(new Blob([PROCESSOR], { type: "text/javascript" }));
      try {
        await context.audioWorklet.addModule(module);
      } finally {
        URL.revokeObjectURL(module);
      }
      node = new AudioWorkletNode(context, "whisperq-capture");
      node.port.onmessage = (message) => deliver(message.data);
    } catch {
      node = context.createScriptProcessor(4096, 2, 1);  // no AudioWorklet: the older, main-thread way
      node.onaudioprocess = (processed) => {
        const input = processed.inputBuffer;
        const mono = new Float32Array(input.length);
        for (let c = 0; c < input.numberOfChannels; c++) {
          const channel = input.getChannelData(c);
          for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / input.numberOfChannels;
        }
        deliver(mono);
      };
    }
    source.connect(node);
    node.connect(silent);
    return {
      stop() {
        for (const track of stream.getTracks()) track.stop();
        if (node.port) node.port.onmessage = null;
        else node.onaudioprocess = null;
        source.disconnect();
        node.disconnect();
        if (context.state !== "closed") context.close();
      },
    };
  }

  // A stateful linear-interpolation resampler: each call takes the next block and gives what it yields.
  function resampler(from, to) {
    if (from === to) return (samples) => samples;
    const step = from / to;
    let position = 0;  // in input samples from the start of the next block; -1 is the last sample of the one before
    let last = 0;
    return (input) => {
      if (!input.length) return input;
      const output = new Float32Array(Math.max(0, Math.ceil((input.length - 1 - position) / step)) + 1);
      let count = 0;
      for (; position < input.length - 1; position += step) {
        const index = Math.floor(position);
        const before = index < 0 ? last : input[index];
        output[count++] = before + (input[index + 1] - before) * (position - index);
      }
      position -= input.length;
      last = input[input.length - 1];
      return output.subarray(0, count);
    };
  }

  function concat(a, b) {
    const joined = new Float32Array(a.length + b.length);
    joined.set(a);
    joined.set(b, a.length);
    return joined;
  }

  function pcm16(samples) {
    const view = new DataView(new ArrayBuffer(samples.length * 2));
    for (let i = 0; i < samples.length; i++) {
      const s = Math.max(-1, Math.min(1, samples[i]));
      view.setInt16(i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    }
    return new Uint8Array(view.buffer);
  }

  function base64(bytes) {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(binary);
  }
}
