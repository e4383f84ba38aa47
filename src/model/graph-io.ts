/**
 * Names and symbolic dims of the decoder graph's inputs and outputs, shared by the graph builder
 * and the engine that feeds it.
 * @module
 */

/** Symbolic dims bound at run time. */
export const DIM = {
  batch: 'batch',
  /** New tokens in this call (N). */
  seq: 'seq',
  /** Tokens already in the KV cache (T). */
  past: 'past',
  /** past + seq (M). */
  total: 'total',
  /** Rows of the flattened `[batch * seq]` hidden states whose logits are returned. */
  logitRows: 'logit_rows',
  /** Module slots in this run (slot 0 is the all-zero module). */
  slots: 'slots',
  keyRank: 'key_rank',
  valueRank: 'value_rank',
  loraRank: 'lora_rank',
  /** Prefix columns P of the widest prefix in the slot table (narrower prefixes are padded with masked columns). */
  prefixLength: 'prefix_length',
  /** prefix_length + total: the key columns that one softmax covers. */
  attended: 'attended',
} as const;

export const INPUT = {
  /** int64 [batch, seq] */
  inputIds: 'input_ids',
  /** int64 [batch, seq]: absolute position of each new token (0 for padding). */
  positionIds: 'position_ids',
  /** int64 [batch, total]: 1 for real tokens, 0 for padding, over cached and new tokens. */
  attentionMask: 'attention_mask',
  /** int64 [logit_rows]: indices into the flattened [batch * seq] positions. */
  logitsIndices: 'logits_indices',
  /** int64 [batch]: module slot of each row. */
  slotIds: 'slot_ids',
} as const;

/** Past key of layer `i`: float32 [batch, kv_heads, past, head_dim]. */
export const pastKey = (i: number): string => `past_key_values.${i}.key`;
export const pastValue = (i: number): string => `past_key_values.${i}.value`;
/** Present key of layer `i`: float32 [batch, kv_heads, total, head_dim]. */
export const presentKey = (i: number): string => `present.${i}.key`;
export const presentValue = (i: number): string => `present.${i}.value`;

export const OUTPUT_LOGITS = 'logits';

/**
 * Module parameters as graph inputs, stacked over slots and layers (`[slots, layers, ...]`), so a
 * batch mixes modules by `slot_ids`. Shapes use H query heads, KVH key/value heads, d head size,
 * D model width, Dq = H*d. The inducer's LoRA-Q and the `lora` method's query update share the
 * `module.lora_q.*` inputs. The `lora` method's value update has its own A and B and shares the
 * `lora_rank` dim and the scale.
 */
export const MODULE_INPUT = {
  /** [slots, L, H, d, key_rank] */
  keyDownWeight: 'module.inducer.key.down.weight',
  /** [slots, L, H, key_rank] */
  keyDownBias: 'module.inducer.key.down.bias',
  /** [slots, L, H, key_rank, d] */
  keyUpWeight: 'module.inducer.key.up.weight',
  /** [slots, L, H, d] */
  keyUpBias: 'module.inducer.key.up.bias',
  /** [slots, L, H, d, value_rank] */
  valueDownWeight: 'module.inducer.value.down.weight',
  /** [slots, L, H, value_rank] */
  valueDownBias: 'module.inducer.value.down.bias',
  /** [slots, L, H, value_rank, D] */
  valueUpWeight: 'module.inducer.value.up.weight',
  /** [slots, L, D] */
  valueUpBias: 'module.inducer.value.up.bias',
  /** [slots, L, lora_rank, D] */
  loraA: 'module.lora_q.A',
  /** [slots, L, Dq, lora_rank] */
  loraB: 'module.lora_q.B',
  /** [slots, L, Dq] */
  loraBias: 'module.lora_q.bias',
  /** [slots]: alpha / rank of each slot's LoRA (0 for slots without LoRA). */
  loraScale: 'module.lora_q.scale',
  /** [slots, L, lora_rank, D]: A of the `lora` method's value update. */
  loraValueA: 'module.lora_v.A',
  /** [slots, L, KVH*d, lora_rank]: B of the `lora` method's value update. */
  loraValueB: 'module.lora_v.B',
  /** [slots, L, KVH, prefix_length, d]: prefix-tuning's virtual keys (not rotated). */
  prefixKey: 'module.prefix.key',
  /** [slots, L, KVH, prefix_length, d]: prefix-tuning's virtual values. */
  prefixValue: 'module.prefix.value',
  /** [slots, prefix_length]: 1 for a real prefix column of the slot, 0 for a masked one (slot 0, padding). */
  prefixMask: 'module.prefix.mask',
} as const;

export type ModuleInputName = (typeof MODULE_INPUT)[keyof typeof MODULE_INPUT];
