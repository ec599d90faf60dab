"""GPT-2 and the LLaMA family, both ways: Hugging Face config + tensors <-> the shared transformer.

Each architecture is three functions: `config(hf)` (config.json -> TransformerConfig), `params(
tensors, config)` (the checkpoint's tensors, prefix-stripped, -> the Flax param tree) and
`export(config, params)` (the inverse of both). What the Hugging Face code computes and the
shared transformer must match:

- GPT-2: learned positions, pre-LayerNorm, GELU of `activation_function` ('gelu_new' is the
  tanh approximation), biases everywhere, tied embeddings (`tie_word_embeddings`, default
  true). Its Conv1D weights are stored [in, out], as a Flax kernel, and `c_attn` holds q, k, v
  side by side: split into three.
- LLaMA: RMSNorm, RoPE, SwiGLU (gate_proj / up_proj / down_proj = fc_gate / fc_in / fc_out),
  grouped-query attention (`num_key_value_heads`), tied or untied embeddings. nn.Linear
  weights are stored [out, in]: transposed. RoPE: Hugging Face rotates the halves of each
  head (`rotate_half`: dimension i pairs with i + K/2), the shared transformer rotates
  interleaved pairs (2i, 2i+1; llama2.c / Meta). The same rotation up to a fixed order of each
  head's q/k dimensions, so q_proj and k_proj rows are reordered per head on load (and back on
  export); attention scores are unchanged (q.k sums the same products), hook_q/hook_k hold
  the interleaved order.
- Mistral: LLaMA's weights and computation plus a sliding attention window; with sequences no
  longer than the window it is exactly LLaMA, so max_len is capped at `sliding_window`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wrapper_study import model as model_lib

# Hugging Face activation_function -> model.ACTIVATIONS.
GPT2_ACTIVATIONS = {'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh', 'gelu': 'gelu',
                    'relu': 'relu', 'silu': 'silu'}
_GPT2_EXPORT_ACTIVATIONS = {'gelu_tanh': 'gelu_new', 'gelu': 'gelu', 'relu': 'relu',
                            'silu': 'silu'}
# Tensors a checkpoint may hold that are buffers, not parameters (old GPT-2 causal masks,
# old LLaMA rotary frequencies).
IGNORED_SUFFIXES = ('.attn.bias', '.attn.masked_bias', '.rotary_emb.inv_freq')


def unsupported_options(hf: dict) -> list[str]:
  """The config.json settings of a supported model_type that the shared transformer cannot
  compute, as 'key=value (why)' strings; empty when it loads."""
  problems = []
  if hf['model_type'] == 'gpt2':
    if hf.get('activation_function', 'gelu_new') not in GPT2_ACTIVATIONS:
      problems.append(f"activation_function={hf['activation_function']!r} "
                      f'(supported: {sorted(GPT2_ACTIVATIONS)})')
    if not hf.get('scale_attn_weights', True):
      problems.append('scale_attn_weights=false (the model scales by 1/sqrt(d_head))')
    if hf.get('scale_attn_by_inverse_layer_idx', False):
      problems.append('scale_attn_by_inverse_layer_idx=true')
    if hf.get('add_cross_attention', False):
      problems.append('add_cross_attention=true')
  else:
    if hf.get('hidden_act', 'silu') != 'silu':
      problems.append(f"hidden_act={hf['hidden_act']!r} (SwiGLU gates with silu)")
    rope_type = _rope(hf).get('rope_type', _rope(hf).get('type', 'default'))
    if rope_type != 'default':
      problems.append(f'rope scaling {rope_type!r} (only plain RoPE)')
    if bool(hf.get('attention_bias', False)) != bool(hf.get('mlp_bias', False)):
      problems.append('attention_bias != mlp_bias (biases are on every projection or none)')
  return problems


def _rope(hf: dict) -> dict:
  """RoPE settings: transformers >= 5 writes `rope_parameters`, older versions `rope_theta` and
  `rope_scaling`."""
  rope = dict(hf.get('rope_scaling') or {})
  rope.update(hf.get('rope_parameters') or {})
  rope.setdefault('rope_theta', hf.get('rope_theta', 10000.0))
  return rope


# GPT-2 ---------------------------------------------------------------------------------------

def gpt2_config(hf: dict) -> model_lib.TransformerConfig:
  d_model, n_heads = hf['n_embd'], hf['n_head']
  return model_lib.TransformerConfig(
      vocab_size=hf['vocab_size'], max_len=hf['n_positions'], d_model=d_model,
      n_layers=hf['n_layer'], n_heads=n_heads, d_head=d_model // n_heads,
      d_mlp=hf.get('n_inner') or 4 * d_model,
      activation=GPT2_ACTIVATIONS[hf.get('activation_function', 'gelu_new')],
      layer_norm=True, causal=True, use_bias=True,
      init_std=hf.get('initializer_range', 0.02), norm='layer', pos_embedding='learned',
      mlp='standard', tied_embeddings=hf.get('tie_word_embeddings', True),
      norm_eps=hf.get('layer_norm_epsilon', 1e-5))


def _ln(t: dict, name: str) -> dict:
  return {'scale': t[f'{name}.weight'], 'bias': t[f'{name}.bias']}


def _dense(kernel, bias=None) -> dict:
  return {'kernel': kernel} if bias is None else {'kernel': kernel, 'bias': bias}


def gpt2_params(t: dict, config: model_lib.TransformerConfig) -> dict:
  params = {'embed': {'embedding': t['wte.weight']},
            'pos_embed': {'embedding': t['wpe.weight']}, 'ln_final': _ln(t, 'ln_f')}
  for l in range(config.n_layers):
    h = f'h.{l}'
    q, k, v = np.split(t[f'{h}.attn.c_attn.weight'], 3, axis=1)
    qb, kb, vb = np.split(t[f'{h}.attn.c_attn.bias'], 3)
    params[f'blocks_{l}'] = {
        'ln1': _ln(t, f'{h}.ln_1'), 'ln2': _ln(t, f'{h}.ln_2'),
        'attn': {'query': _dense(q, qb), 'key': _dense(k, kb), 'value': _dense(v, vb),
                 'out': _dense(t[f'{h}.attn.c_proj.weight'], t[f'{h}.attn.c_proj.bias'])},
        'mlp': {'fc_in': _dense(t[f'{h}.mlp.c_fc.weight'], t[f'{h}.mlp.c_fc.bias']),
                'fc_out': _dense(t[f'{h}.mlp.c_proj.weight'], t[f'{h}.mlp.c_proj.bias'])}}
  if not config.tied_embeddings:
    params['unembed'] = {'kernel': t['lm_head.weight'].T}
  return params


def gpt2_export(config: model_lib.TransformerConfig, params) -> tuple[dict, dict]:
  c = config
  hf = {'model_type': 'gpt2', 'architectures': ['GPT2LMHeadModel'],
        'vocab_size': c.vocab_size, 'n_positions': c.max_len, 'n_embd': c.d_model,
        'n_layer': c.n_layers, 'n_head': c.n_heads, 'n_inner': c.d_mlp,
        'activation_function': _GPT2_EXPORT_ACTIVATIONS[c.activation],
        'layer_norm_epsilon': c.norm_eps, 'initializer_range': c.init_std,
        'tie_word_embeddings': c.tied_embeddings, 'scale_attn_weights': True,
        'resid_pdrop': 0.0, 'embd_pdrop': 0.0, 'attn_pdrop': 0.0,
        'bos_token_id': None, 'eos_token_id': None}  # GPT-2's 50256 is outside small vocabs.
  t = {'transformer.wte.weight': params['embed']['embedding'],
       'transformer.wpe.weight': params['pos_embed']['embedding'],
       'transformer.ln_f.weight': params['ln_final']['scale'],
       'transformer.ln_f.bias': params['ln_final']['bias']}
  for l in range(c.n_layers):
    b, h = params[f'blocks_{l}'], f'transformer.h.{l}'
    a = b['attn']
    t[f'{h}.attn.c_attn.weight'] = np.concatenate(
        [a[n]['kernel'] for n in ('query', 'key', 'value')], axis=1)
    t[f'{h}.attn.c_attn.bias'] = np.concatenate([a[n]['bias'] for n in ('query', 'key', 'value')])
    for ours, theirs in (('ln1', 'ln_1'), ('ln2', 'ln_2')):
      t[f'{h}.{theirs}.weight'], t[f'{h}.{theirs}.bias'] = b[ours]['scale'], b[ours]['bias']
    for (ours, mod), theirs in (((a, 'out'), 'attn.c_proj'), ((b['mlp'], 'fc_in'), 'mlp.c_fc'),
                                ((b['mlp'], 'fc_out'), 'mlp.c_proj')):
      t[f'{h}.{theirs}.weight'], t[f'{h}.{theirs}.bias'] = ours[mod]['kernel'], ours[mod]['bias']
  if not c.tied_embeddings:
    t['lm_head.weight'] = params['unembed']['kernel'].T
  return hf, t


# LLaMA ---------------------------------------------------------------------------------------

def _rope_order(d_head: int) -> np.ndarray:
  """Model dimension j of a head reads Hugging Face dimension order[j]: 2i <- i, 2i+1 <- i+K/2."""
  half = d_head // 2
  return np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)


def _reorder_heads(w, n_heads: int, order: np.ndarray):
  """Reorders the rows (axis 0) of each head's block of a [H*K, ...] weight or [H*K] bias."""
  w = np.asarray(w)
  return w.reshape(n_heads, -1, *w.shape[1:])[:, order].reshape(w.shape)


def llama_config(hf: dict) -> model_lib.TransformerConfig:
  d_model, n_heads = hf['hidden_size'], hf['num_attention_heads']
  n_kv = hf.get('num_key_value_heads') or n_heads
  return model_lib.TransformerConfig(
      vocab_size=hf['vocab_size'], max_len=hf['max_position_embeddings'], d_model=d_model,
      n_layers=hf['num_hidden_layers'], n_heads=n_heads,
      n_kv_heads=None if n_kv == n_heads else n_kv,
      d_head=hf.get('head_dim') or d_model // n_heads, d_mlp=hf['intermediate_size'],
      activation='silu', layer_norm=True, causal=True,
      use_bias=bool(hf.get('attention_bias', False)),
      init_std=hf.get('initializer_range', 0.02), norm='rms', pos_embedding='rope',
      rope_base=float(_rope(hf)['rope_theta']), mlp='swiglu',
      tied_embeddings=bool(hf.get('tie_word_embeddings', False)),
      norm_eps=hf.get('rms_norm_eps', 1e-6))


def llama_params(t: dict, config: model_lib.TransformerConfig) -> dict:
  c, order = config, _rope_order(config.d_head)
  bias = lambda name: t[f'{name}.bias'] if c.use_bias else None
  params = {'embed': {'embedding': t['embed_tokens.weight']},
            'ln_final': {'scale': t['norm.weight']}}
  for l in range(c.n_layers):
    h = f'layers.{l}'
    qkv = {}
    for ours, theirs, heads in (('query', 'q_proj', c.n_heads), ('key', 'k_proj', c.kv_heads),
                                ('value', 'v_proj', None)):
      name = f'{h}.self_attn.{theirs}'
      w, b = t[f'{name}.weight'], bias(name)
      if heads is not None:  # q, k: half-split rotary order -> interleaved pairs.
        w = _reorder_heads(w, heads, order)
        b = None if b is None else _reorder_heads(b, heads, order)
      qkv[ours] = _dense(w.T, b)
    o = f'{h}.self_attn.o_proj'
    qkv['out'] = _dense(t[f'{o}.weight'].T, bias(o))
    mlp = {ours: _dense(t[f'{h}.mlp.{theirs}.weight'].T, bias(f'{h}.mlp.{theirs}'))
           for ours, theirs in (('fc_gate', 'gate_proj'), ('fc_in', 'up_proj'),
                                ('fc_out', 'down_proj'))}
    params[f'blocks_{l}'] = {'ln1': {'scale': t[f'{h}.input_layernorm.weight']},
                             'ln2': {'scale': t[f'{h}.post_attention_layernorm.weight']},
                             'attn': qkv, 'mlp': mlp}
  if not c.tied_embeddings:
    params['unembed'] = {'kernel': t['lm_head.weight'].T}
  return params


def llama_export(config: model_lib.TransformerConfig, params) -> tuple[dict, dict]:
  c, inverse = config, np.argsort(_rope_order(config.d_head))
  hf = {'model_type': 'llama', 'architectures': ['LlamaForCausalLM'],
        'vocab_size': c.vocab_size, 'max_position_embeddings': c.max_len,
        'hidden_size': c.d_model, 'num_hidden_layers': c.n_layers,
        'num_attention_heads': c.n_heads, 'num_key_value_heads': c.kv_heads,
        'head_dim': c.d_head, 'intermediate_size': c.d_mlp, 'hidden_act': 'silu',
        'rms_norm_eps': c.norm_eps, 'rope_theta': c.rope_base, 'rope_scaling': None,
        'attention_bias': c.use_bias, 'mlp_bias': c.use_bias, 'attention_dropout': 0.0,
        'tie_word_embeddings': c.tied_embeddings, 'initializer_range': c.init_std}
  t = {'model.embed_tokens.weight': params['embed']['embedding'],
       'model.norm.weight': params['ln_final']['scale']}
  for l in range(c.n_layers):
    b, h = params[f'blocks_{l}'], f'model.layers.{l}'
    t[f'{h}.input_layernorm.weight'] = b['ln1']['scale']
    t[f'{h}.post_attention_layernorm.weight'] = b['ln2']['scale']
    for ours, theirs, heads in (('query', 'q_proj', c.n_heads), ('key', 'k_proj', c.kv_heads),
                                ('value', 'v_proj', None), ('out', 'o_proj', None)):
      p = b['attn'][ours]
      w, bb = np.asarray(p['kernel']).T, p.get('bias')
      if heads is not None:
        w = _reorder_heads(w, heads, inverse)
        bb = None if bb is None else _reorder_heads(bb, heads, inverse)
      t[f'{h}.self_attn.{theirs}.weight'] = w
      if bb is not None:
        t[f'{h}.self_attn.{theirs}.bias'] = bb
    for ours, theirs in (('fc_gate', 'gate_proj'), ('fc_in', 'up_proj'), ('fc_out', 'down_proj')):
      p = b['mlp'][ours]
      t[f'{h}.mlp.{theirs}.weight'] = np.asarray(p['kernel']).T
      if 'bias' in p:
        t[f'{h}.mlp.{theirs}.bias'] = p['bias']
  if not c.tied_embeddings:
    t['lm_head.weight'] = np.asarray(params['unembed']['kernel']).T
  return hf, t


def mistral_config(hf: dict) -> model_lib.TransformerConfig:
  config = llama_config(hf)
  window = hf.get('sliding_window')
  if window and window < config.max_len:  # Within the window no key is dropped: LLaMA.
    config = dataclasses.replace(config, max_len=window)
  return config


# model_type -> (config, params, tensor-name prefix that Hugging Face's *ForCausalLM adds).
LOADERS = {'gpt2': (gpt2_config, gpt2_params, 'transformer.'),
           'llama': (llama_config, llama_params, 'model.'),
           'mistral': (mistral_config, llama_params, 'model.')}
