// The Parley phone page: the media endpoint of one identity's calls.
//
// The Python process that served this page holds the identity, its keys and the relay
// connection; this page holds the microphone and the RTCPeerConnection. They talk over
// a WebSocket on the same origin, opened with the token of this page's URL (the server
// refuses it without). Messages are JSON with a "t" tag (parley/web/messages.py).
//
// Session descriptions go whole, never trickled: the page waits for ICE gathering to
// complete before it sends its offer or answer, which the server checks and cuts to
// the allowed host candidates before they go to the peer.
//
// For tests and the curious, window.parleyPhone is a read-only view of the phone:
// state (idle, dialing, ringing, connected, ended), lastEnded, lastDetail, identity,
// peer, callId, packetsReceived, level (RMS of what it hears, 0..1), mediaOpen, and
// dominantFrequency() (Hz of the loudest bin of what it hears).

"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.search).get("token") || "";

  const GATHER_TIMEOUT_MS = 10000;
  const SPECTRUM_SIZE = 32768; // ~1.5 Hz per bin at 48 kHz: a tone to within a few Hz
  const LEVEL_SIZE = 2048;

  const phone = {
    state: "idle",
    lastEnded: null,
    lastDetail: "",
    identity: null,
    peer: null,
    callId: null,
    packetsReceived: 0,
    level: 0,
    linked: false,
    error: null,
    answering: false,
    endedHere: false, // this page hung up or declined (else the other side, or the network)
    connectedAt: null,
    duration: 0,
  };

  let socket = null;
  let iceConfig = {};
  let pc = null;
  let localStream = null;
  let ringing = null; // the incoming message of the call ringing here
  let audioCtx = null;
  let sourceNode = null;
  let levelNode = null;
  let spectrumNode = null;
  let heardSince = 0;
  let statsTimer = null;
  let inbox = Promise.resolve(); // server messages, handled one after the other

  // -- talking to the phone's process ----------------------------------------------------

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function connect() {
    if (!token) {
      showError("This page needs the address parley phone web printed, with its ?token=.");
      setLink(false, "no token");
      return;
    }
    socket = new WebSocket(`ws://${location.host}/ws?token=${encodeURIComponent(token)}`);
    socket.addEventListener("open", () => setLink(true, "connected"));
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      inbox = inbox.then(() => receive(message)).catch((err) => console.error(err));
    });
    socket.addEventListener("close", (event) => {
      setLink(false, "disconnected");
      closeMedia();
      if (phone.state !== "idle" && phone.state !== "ended") endHere("gone", "");
      showError(
        event.code === 4001
          ? "This phone is open in another page."
          : "The phone's process is gone: start parley phone web again and open its new address."
      );
    });
  }

  async function receive(message) {
    switch (message.t) {
      case "hello":
        phone.identity = message.identity;
        iceConfig = message.ice || {};
        break;
      case "dialing":
        if (phone.state === "dialing") {
          if (phone.callId === null) phone.callId = message.call_id;
        } else {
          send({ t: "hangup", call_id: message.call_id }); // given up before the start left
        }
        break;
      case "incoming":
        await incoming(message);
        break;
      case "connected":
        await connected(message);
        break;
      case "ended":
        ended(message);
        break;
      case "error":
        refused(message);
        break;
      default:
        break;
    }
    render();
  }

  async function incoming(message) {
    if (message.glare) {
      await answerGlare(message);
      return;
    }
    if (phone.state === "dialing" || phone.state === "connected" || phone.state === "ringing") {
      send({ t: "busy", call_id: message.call_id });
      return;
    }
    ringing = message;
    phone.endedHere = false;
    phone.state = "ringing";
    phone.peer = message.peer;
    phone.callId = message.call_id;
    phone.answering = false;
    phone.error = null;
    phone.duration = 0;
    phone.packetsReceived = 0;
  }

  async function connected(message) {
    if (message.call_id !== phone.callId && phone.state !== "ringing") return;
    phone.callId = message.call_id;
    ringing = null;
    phone.answering = false;
    phone.state = "connected";
    phone.connectedAt = performance.now();
    if (message.sdp !== null && message.sdp !== undefined) {
      try {
        await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
      } catch (err) {
        mediaFailed(`the answer does not fit: ${err.message || err}`);
      }
    }
  }

  function ended(message) {
    const ours = message.call_id === phone.callId;
    // A call the page never saw ring (its offer was unusable) is still worth telling.
    if (!ours && phone.state !== "idle" && phone.state !== "ended") return;
    closeMedia();
    ringing = null;
    phone.peer = message.peer;
    phone.duration = message.duration || phone.duration;
    endHere(message.reason, message.detail || "");
  }

  function refused(message) {
    phone.error = message.message;
    if (message.request === "place" && phone.state === "dialing" && phone.callId === null) {
      closeMedia();
      endHere("failed", message.message);
    } else if (message.request === "accept" && phone.state === "ringing") {
      closeMedia();
      phone.answering = false;
    }
  }

  function endHere(reason, detail) {
    phone.state = "ended";
    phone.lastEnded = reason;
    phone.lastDetail = detail;
    phone.callId = null;
    phone.answering = false;
    phone.connectedAt = null;
  }

  // -- what the user does ----------------------------------------------------------------

  async function placeCall(peer) {
    phone.error = null;
    phone.endedHere = false;
    phone.state = "dialing";
    phone.peer = peer;
    phone.callId = null;
    phone.duration = 0;
    phone.packetsReceived = 0;
    render();
    try {
      await openMedia();
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
    } catch (err) {
      closeMedia();
      endHere("failed", `no call: ${err.message || err}`);
      render();
      return;
    }
    if (phone.state === "dialing") send({ t: "place", peer, sdp: pc.localDescription.sdp });
  }

  async function accept() {
    const call = ringing;
    if (!call || phone.answering) return;
    phone.answering = true;
    phone.error = null;
    render();
    try {
      await openMedia();
      await pc.setRemoteDescription({ type: "offer", sdp: call.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
    } catch (err) {
      closeMedia();
      send({ t: "media_failed", call_id: call.call_id, detail: `no answer: ${err.message || err}` });
      return;
    }
    if (phone.state === "ringing" && phone.callId === call.call_id) {
      send({ t: "accept", call_id: call.call_id, sdp: pc.localDescription.sdp });
    } else {
      closeMedia();
    }
  }

  // The peer called at the same moment and its call won (the lower call id): answer its
  // offer on the connection our own offer was made on (setRemoteDescription rolls it back).
  async function answerGlare(message) {
    phone.callId = message.call_id;
    phone.peer = message.peer;
    try {
      if (!pc) throw new Error("the call was hung up");
      await pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
    } catch (err) {
      mediaFailed(`no answer to the call that won glare: ${err.message || err}`);
      return;
    }
    send({ t: "accept", call_id: message.call_id, sdp: pc.localDescription.sdp });
  }

  function decline() {
    if (!ringing) return;
    phone.endedHere = true;
    send({ t: "decline", call_id: ringing.call_id });
  }

  function hangup() {
    phone.endedHere = true;
    if (phone.callId !== null) {
      send({ t: "hangup", call_id: phone.callId }); // the ended message follows
      closeMedia();
    } else {
      closeMedia(); // still gathering: nothing was sent
      endHere("hangup", "");
    }
    render();
  }

  function mediaFailed(detail) {
    if (phone.callId !== null) send({ t: "media_failed", call_id: phone.callId, detail });
    closeMedia();
  }

  // -- media -------------------------------------------------------------------------------

  function ensureAudio() {
    // Made on a click, so the browser lets it run.
    if (!audioCtx) audioCtx = new AudioContext();
    if (audioCtx.state === "suspended") audioCtx.resume();
  }

  async function openMedia() {
    closeMedia();
    ensureAudio();
    localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    const connection = new RTCPeerConnection(iceConfig);
    pc = connection;
    for (const track of localStream.getAudioTracks()) connection.addTrack(track, localStream);
    connection.addEventListener("track", (event) => {
      if (connection === pc) hear(event.streams[0] || new MediaStream([event.track]));
    });
    connection.addEventListener("connectionstatechange", () => {
      if (connection === pc && connection.connectionState === "failed") {
        mediaFailed("the media connection failed (ICE or DTLS)");
        render();
      }
    });
    statsTimer = setInterval(readStats, 500);
  }

  function hear(stream) {
    const remote = $("remote");
    // Chrome feeds a remote stream to Web Audio only while a media element plays it.
    remote.srcObject = stream;
    remote.play().catch(() => {});
    if (sourceNode) sourceNode.disconnect();
    sourceNode = audioCtx.createMediaStreamSource(stream);
    levelNode = audioCtx.createAnalyser();
    levelNode.fftSize = LEVEL_SIZE;
    spectrumNode = audioCtx.createAnalyser();
    spectrumNode.fftSize = SPECTRUM_SIZE;
    spectrumNode.smoothingTimeConstant = 0;
    sourceNode.connect(levelNode);
    sourceNode.connect(spectrumNode);
    heardSince = performance.now();
  }

  function closeMedia() {
    if (statsTimer !== null) clearInterval(statsTimer);
    statsTimer = null;
    if (pc) pc.close();
    pc = null;
    if (localStream) for (const track of localStream.getTracks()) track.stop();
    localStream = null;
    if (sourceNode) sourceNode.disconnect();
    sourceNode = levelNode = spectrumNode = null;
    $("remote").srcObject = null;
    phone.level = 0;
  }

  function gathered(connection) {
    return new Promise((resolve, reject) => {
      if (connection.iceGatheringState === "complete") {
        resolve();
        return;
      }
      const timer = setTimeout(
        () => reject(new Error(`ICE gathering did not complete in ${GATHER_TIMEOUT_MS / 1000} s`)),
        GATHER_TIMEOUT_MS
      );
      connection.addEventListener("icegatheringstatechange", () => {
        if (connection.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function readStats() {
    const connection = pc;
    if (!connection) return;
    const report = await connection.getStats();
    let packets = 0;
    report.forEach((stat) => {
      if (stat.type === "inbound-rtp" && stat.kind === "audio") packets += stat.packetsReceived || 0;
    });
    if (connection === pc) phone.packetsReceived = packets;
  }

  function measureLevel() {
    if (!levelNode) return;
    const samples = new Float32Array(LEVEL_SIZE);
    levelNode.getFloatTimeDomainData(samples);
    let power = 0;
    for (const sample of samples) power += sample * sample;
    phone.level = Math.sqrt(power / samples.length);
  }

  async function dominantFrequency() {
    if (!spectrumNode) return null;
    // The analyser needs a full window of what was heard before its spectrum means much.
    const ready = heardSince + (SPECTRUM_SIZE / audioCtx.sampleRate) * 1000 + 200;
    const wait = ready - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const node = spectrumNode;
    if (!node) return null;
    const bins = new Float32Array(node.frequencyBinCount);
    node.getFloatFrequencyData(bins);
    let best = 2;
    for (let i = 3; i < bins.length - 1; i++) if (bins[i] > bins[best]) best = i;
    if (!Number.isFinite(bins[best]) || bins[best] < -110) return null; // silence
    // A parabola through the peak and its neighbours (in dB) places it between bins.
    const [a, b, c] = [bins[best - 1], bins[best], bins[best + 1]];
    const bend = a - 2 * b + c;
    const shift = bend === 0 ? 0 : (0.5 * (a - c)) / bend;
    return ((best + shift) * audioCtx.sampleRate) / node.fftSize;
  }

  // -- showing it --------------------------------------------------------------------------

  const STATE_TEXT = {
    idle: "Idle",
    dialing: "Calling…",
    ringing: "Ringing",
    connected: "In a call",
    ended: "Call ended",
  };

  const HERE_TEXT = { hangup: "you hung up", declined: "you declined" };

  const REASON_TEXT = {
    hangup: "the other side hung up",
    busy: "busy",
    declined: "declined",
    timeout: "nobody answered",
    answered_elsewhere: "answered on another device",
    gone: "the other side is gone",
    failed: "failed",
  };

  function setLink(ok, text) {
    phone.linked = ok;
    $("link").dataset.ok = String(ok);
    $("link").textContent = text;
    render();
  }

  function showError(text) {
    phone.error = text;
    render();
  }

  function clock(seconds) {
    const whole = Math.max(0, Math.floor(seconds));
    const minutes = Math.floor(whole / 60);
    return `${minutes}:${String(whole % 60).padStart(2, "0")}`;
  }

  function render() {
    const live = phone.state === "dialing" || phone.state === "connected";
    if (phone.connectedAt !== null) phone.duration = (performance.now() - phone.connectedAt) / 1000;

    $("identity").textContent = phone.identity || "…";
    $("call-panel").dataset.state = phone.state;
    $("state").textContent =
      phone.state === "ringing" && phone.answering ? "Answering…" : STATE_TEXT[phone.state];
    $("peer").textContent = phone.peer && phone.state !== "idle" ? phone.peer : "";

    const duration = $("duration");
    duration.hidden = !(phone.state === "connected" || (phone.state === "ended" && phone.duration > 0));
    duration.textContent = clock(phone.duration);

    const reason = $("reason");
    reason.hidden = phone.state !== "ended";
    if (phone.state === "ended") {
      const here = phone.endedHere && HERE_TEXT[phone.lastEnded];
      const text = here || REASON_TEXT[phone.lastEnded] || phone.lastEnded || "";
      reason.textContent = phone.lastDetail ? `${text}: ${phone.lastDetail}` : text;
    }

    $("incoming").hidden = phone.state !== "ringing";
    $("caller").textContent = phone.state === "ringing" ? phone.peer : "";
    $("accept").disabled = phone.answering;
    $("decline").disabled = phone.answering;
    $("hangup").hidden = !live;

    const idle = phone.linked && (phone.state === "idle" || phone.state === "ended");
    $("call").disabled = !idle;
    $("peer-id").disabled = !idle;

    const db = phone.level > 0 ? 20 * Math.log10(phone.level) : -Infinity;
    const width = Number.isFinite(db) ? Math.min(100, Math.max(0, ((db + 60) / 60) * 100)) : 0;
    $("level-mask").style.width = `${100 - width}%`;
    $("level-text").textContent = Number.isFinite(db) && db > -90 ? `${db.toFixed(0)} dBFS` : "silent";
    $("packets").textContent = `${phone.packetsReceived} packets`;

    const error = $("error");
    error.hidden = !phone.error;
    error.textContent = phone.error || "";
  }

  // -- wiring ------------------------------------------------------------------------------

  $("dial").addEventListener("submit", (event) => {
    event.preventDefault();
    const peer = $("peer-id").value.trim();
    if (peer) placeCall(peer);
  });
  $("accept").addEventListener("click", () => accept());
  $("decline").addEventListener("click", () => decline());
  $("hangup").addEventListener("click", () => hangup());

  setInterval(() => {
    measureLevel();
    render();
  }, 100);

  Object.defineProperty(window, "parleyPhone", {
    value: Object.freeze({
      get state() { return phone.state; },
      get lastEnded() { return phone.lastEnded; },
      get lastDetail() { return phone.lastDetail; },
      get identity() { return phone.identity; },
      get peer() { return phone.peer; },
      get callId() { return phone.callId; },
      get packetsReceived() { return phone.packetsReceived; },
      get level() { return phone.level; },
      get linked() { return phone.linked; },
      get error() { return phone.error; },
      get mediaOpen() { return pc !== null || localStream !== null; },
      dominantFrequency,
    }),
    writable: false,
    configurable: false,
  });

  render();
  connect();
})();
