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
 * batch mixes modules by `slot_ids`. Shapes use H query heads, d head size, D model width, Dq = H*d.
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
  /** [slots]: alpha / rank of each slot's LoRA-Q (0 for slots without LoRA-Q). */
  loraScale: 'module.lora_q.scale',
} as const;

export type ModuleInputName = (typeof MODULE_INPUT)[keyof typeof MODULE_INPUT];
