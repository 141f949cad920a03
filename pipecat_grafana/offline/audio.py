"""The offline call's audio: a synthetic voice as 16-bit PCM, and a VAD that hears it.

The scripted caller and the scripted TTS speak with ``synthesize_voice`` (a few
harmonics of a wavering pitch, rising and falling like syllables) rather than
recorded speech, so nothing has to ship with the package and no two calls sound
quite the same. ``EnergyVADAnalyzer`` stands in for Silero, which is trained on
real speech; the scripted STT tells speech from silence by the same energy.
"""

import math
from typing import Any

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADAnalyzer

# What a WebRTC or telephony transport delivers: 20 ms of 16-bit mono audio.
CHUNK_SECS = 0.02
# Energy above which audio is voice rather than silence, for the VAD and the STT.
VOICE_DBFS = -45.0


def synthesize_voice(
    duration_secs: float,
    sample_rate: int,
    *,
    pitch_hz: float,
    rng: np.random.Generator,
    leading_silence_secs: float = 0.0,
) -> bytes:
    """Synthesize a voice-like signal as 16-bit mono PCM.

    A few harmonics of a wavering pitch, with a little breath noise, rising and
    falling at a syllable rate of four a second. Loud enough for an energy VAD and
    for Pipecat's speech-onset detection, which is what TTFA measures to.
    """
    n = int(duration_secs * sample_rate)
    t = np.arange(n) / sample_rate
    pitch = pitch_hz * (1.0 + 0.05 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, np.pi)))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    signal = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4))
    signal = signal + 0.1 * rng.standard_normal(n)
    syllables = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 2.0 * t + rng.uniform(0, np.pi)))
    samples = 0.25 * signal * syllables / 2.1
    silence = np.zeros(int(leading_silence_secs * sample_rate))
    pcm = np.clip(np.concatenate([silence, samples]), -1.0, 1.0)
    return (pcm * 32767).astype(np.int16).tobytes()


def audio_secs(audio: bytes, sample_rate: int, num_channels: int = 1) -> float:
    """The duration of 16-bit PCM audio."""
    return len(audio) / (2 * sample_rate * num_channels)


def rms_dbfs(audio: bytes) -> float:
    """The energy of 16-bit PCM audio, in dB relative to full scale."""
    samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


class EnergyVADAnalyzer(VADAnalyzer):
    """A voice activity detector that hears energy, for audio that is silence or voice.

    Stands in for Silero where the "speech" is synthetic: everything Pipecat does
    with a VAD (start and stop debouncing, the volume gate, the speech events the
    user aggregator broadcasts) runs unchanged around it.
    """

    def __init__(self, *, threshold_dbfs: float = VOICE_DBFS, **kwargs: Any):
        """Initialize the analyzer.

        Args:
            threshold_dbfs: Energy at which a 20 ms frame counts as half voice.
            **kwargs: Passed on to ``VADAnalyzer`` (``sample_rate``, ``params``).
        """
        super().__init__(**kwargs)
        self._threshold_dbfs = threshold_dbfs

    def num_frames_required(self) -> int:
        """Analyze 20 ms of audio at a time."""
        return int(self.sample_rate * CHUNK_SECS)

    def voice_confidence(self, buffer: bytes) -> float:
        """Map the frame's energy onto a confidence, 0.5 at the threshold."""
        return min(1.0, max(0.0, 0.5 + (rms_dbfs(buffer) - self._threshold_dbfs) / 20.0))
