"""The next-chunk LSTM in numpy: embedding -> one LSTM layer -> linear over the vocabulary.

Forward, backpropagation through time and Adam are written out here (no torch: its PyPI wheel
pulls 3 GB of CUDA libraries; see docs/decisions/0014-onnx-lstm.md). Everything is float32 (float64
in the gradient check) and seeded, and no operation depends on timing, so the same data and seed give the same weights,
bit for bit, on one machine.

Gate order is ONNX's (input, output, forget, cell: "iofc"), so export.py copies the weights
into the ONNX LSTM operator unchanged:

    z = x_t @ W + h_{t-1} @ R + b          (W: [E, 4H], R: [H, 4H], b: [4H])
    i, o, f = sigmoid(z[:, :H]), sigmoid(z[:, H:2H]), sigmoid(z[:, 2H:3H])
    g = tanh(z[:, 3H:])
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
    logits_t = h_t @ V + v                 (V: [H, vocab])
"""

import numpy as np

F32 = np.float32


def sigmoid(x):
    # Split by sign so exp never overflows (np.exp(-x) for large negative x would).
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


class Lstm:
    """Parameters and their Adam moments."""

    NAMES = ("embedding", "W", "R", "b", "V", "v")

    def __init__(self, vocab, embed, hidden, seed, dtype=F32):
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(hidden)

        def uniform(shape, scale):
            return rng.uniform(-scale, scale, size=shape).astype(dtype)

        self.vocab, self.embed, self.hidden, self.dtype = vocab, embed, hidden, dtype
        self.params = {
            "embedding": (rng.standard_normal((vocab, embed)) * 0.1).astype(dtype),
            "W": uniform((embed, 4 * hidden), k),
            "R": uniform((hidden, 4 * hidden), k),
            "b": np.zeros(4 * hidden, dtype=dtype),
            "V": uniform((hidden, vocab), k),
            "v": np.zeros(vocab, dtype=dtype),
        }
        # A forget gate that starts open keeps gradients alive through time.
        self.params["b"][2 * hidden : 3 * hidden] = 1.0
        self.m = {n: np.zeros_like(p) for n, p in self.params.items()}
        self.s = {n: np.zeros_like(p) for n, p in self.params.items()}
        self.step = 0

    # ---------------------------------------------------------------- forward

    def hidden_states(self, tokens):
        """Runs the LSTM over `tokens` [batch, seq] from a zero state.

        Returns the hidden states [batch, seq, H] and the per-step cache backward needs.
        """
        p, H = self.params, self.hidden
        batch, seq = tokens.shape
        x = p["embedding"][tokens]
        h = np.zeros((batch, H), dtype=self.dtype)
        c = np.zeros((batch, H), dtype=self.dtype)
        hs = np.empty((batch, seq, H), dtype=self.dtype)
        cache = []
        for t in range(seq):
            z = x[:, t] @ p["W"] + h @ p["R"] + p["b"]
            i, o, f = sigmoid(z[:, :H]), sigmoid(z[:, H : 2 * H]), sigmoid(z[:, 2 * H : 3 * H])
            g = np.tanh(z[:, 3 * H :])
            c_prev = c
            c = f * c_prev + i * g
            tc = np.tanh(c)
            h_prev = h
            h = o * tc
            hs[:, t] = h
            cache.append((h_prev, c_prev, i, o, f, g, tc))
        return x, hs, cache

    def logits(self, tokens):
        """Logits of the next token after the last position of each row: [batch, vocab]."""
        _, hs, _ = self.hidden_states(np.asarray(tokens, dtype=np.int64))
        return hs[:, -1] @ self.params["V"] + self.params["v"]

    # ---------------------------------------------------------------- training

    def loss_and_grads(self, tokens, targets, mask):
        """Mean cross-entropy of `targets` over positions where `mask` is 1, and its gradients."""
        p, H = self.params, self.hidden
        x, hs, cache = self.hidden_states(tokens)
        batch, seq = tokens.shape
        logits = hs @ p["V"] + p["v"]
        logits -= logits.max(axis=-1, keepdims=True)
        expl = np.exp(logits)
        probs = expl / expl.sum(axis=-1, keepdims=True)
        count = self.dtype(max(mask.sum(), 1.0))
        picked = np.take_along_axis(probs, targets[..., None], axis=-1)[..., 0]
        loss = float(-(np.log(np.maximum(picked, 1e-30)) * mask).sum() / count)

        dlogits = probs
        np.put_along_axis(
            dlogits, targets[..., None], np.take_along_axis(dlogits, targets[..., None], -1) - 1.0, -1
        )
        dlogits *= (mask / count)[..., None].astype(self.dtype)
        grads = {n: np.zeros_like(v) for n, v in p.items()}
        grads["V"] = hs.reshape(-1, H).T @ dlogits.reshape(-1, self.vocab)
        grads["v"] = dlogits.sum(axis=(0, 1))
        dhs = dlogits @ p["V"].T
        dx = np.empty_like(x)
        dh_next = np.zeros((batch, H), dtype=self.dtype)
        dc_next = np.zeros((batch, H), dtype=self.dtype)
        for t in reversed(range(seq)):
            h_prev, c_prev, i, o, f, g, tc = cache[t]
            dh = dhs[:, t] + dh_next
            do = dh * tc
            dc = dc_next + dh * o * (1.0 - tc * tc)
            di, df, dg = dc * g, dc * c_prev, dc * i
            dz = np.concatenate(
                [di * i * (1 - i), do * o * (1 - o), df * f * (1 - f), dg * (1 - g * g)], axis=1
            )
            grads["W"] += x[:, t].T @ dz
            grads["R"] += h_prev.T @ dz
            grads["b"] += dz.sum(axis=0)
            dx[:, t] = dz @ p["W"].T
            dh_next = dz @ p["R"].T
            dc_next = dc * f
        np.add.at(grads["embedding"], tokens.reshape(-1), dx.reshape(-1, self.embed))
        return loss, grads

    def adam(self, grads, lr, clip, beta1=0.9, beta2=0.999, eps=1e-8):
        """One Adam step, after scaling the gradients to a global norm of at most `clip`."""
        norm = float(np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values())))
        scale = F32(min(1.0, clip / (norm + 1e-12)))
        self.step += 1
        c1 = 1.0 - beta1**self.step
        c2 = 1.0 - beta2**self.step
        for n in self.NAMES:
            g = grads[n] * scale
            self.m[n] = F32(beta1) * self.m[n] + F32(1 - beta1) * g
            self.s[n] = F32(beta2) * self.s[n] + F32(1 - beta2) * g * g
            update = (self.m[n] / F32(c1)) / (np.sqrt(self.s[n] / F32(c2)) + F32(eps))
            self.params[n] = (self.params[n] - F32(lr) * update).astype(F32)
        return norm
