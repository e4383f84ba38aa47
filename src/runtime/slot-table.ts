/**
 * The slot table: module parameters laid out as the decoder graph's `[slots, layers, ...]` inputs.
 * Slot 0 is the all-zero module (the frozen model). A module is copied into a slot once and
 * stays there until its slot is reused, so a decode step does not repack parameters.
 * Ranks are padded with zeros to the table's ranks, which is exact: a zero unit contributes
 * tanh(0 + 0) * 0 = 0 to the value path, 0 to the inducer key and 0 to LoRA. Prefixes are padded
 * to the table's prefix length with columns whose mask is 0, which get softmax weight 0; a slot
 * without a prefix module has every prefix column masked.
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import { MODULE_INPUT, type ModuleInputName } from '../model/graph-io.js';
import type { HostTensor } from '../model/tensor.js';

/** The part of an inducer module that the slot table uses: its ranks, and its tensors named as in the module file. */
export interface InducerSlotModule {
  /** Absent or 'inducer'. */
  readonly method?: 'inducer';
  readonly keyRank: number;
  readonly valueRank: number;
  readonly loraQ: { readonly rank: number; readonly alpha: number; readonly bias: boolean } | null;
  readonly tensors: ReadonlyMap<string, HostTensor>;
}

/** A prefix-tuning module: `layers.{i}.prefix.key` and `.value`, each [KVH, prefixLength, d]. */
export interface PrefixSlotModule {
  readonly method: 'prefix';
  readonly prefixLength: number;
  readonly tensors: ReadonlyMap<string, HostTensor>;
}

/** A LoRA module on query and value: `layers.{i}.lora.q.A` [r, D], `.q.B` [H*d, r], `.v.A` [r, D], `.v.B` [KVH*d, r]. */
export interface LoraSlotModule {
  readonly method: 'lora';
  readonly rank: number;
  readonly alpha: number;
  readonly tensors: ReadonlyMap<string, HostTensor>;
}

/** A module of any method as the slot table reads it. */
export type SlotModule = InducerSlotModule | PrefixSlotModule | LoraSlotModule;

/** A module's parameter tensor as a graph input buffer: data plus dims. */
export interface SlotBuffer {
  readonly data: Float32Array;
  readonly dims: readonly number[];
}

interface Ranks {
  key: number;
  value: number;
  lora: number;
  prefix: number;
}

/** Returns the table ranks that `m` needs, 1 for the parts it does not have. */
function ranksOf(m: SlotModule): Ranks {
  if (m.method === 'prefix') return { key: 1, value: 1, lora: 1, prefix: m.prefixLength };
  if (m.method === 'lora') return { key: 1, value: 1, lora: m.rank, prefix: 1 };
  return { key: m.keyRank >= 2 ? m.keyRank : 1, value: m.valueRank, lora: m.loraQ?.rank ?? 1, prefix: 1 };
}

export class SlotCapacityError extends Error {
  override readonly name = 'SlotCapacityError';
}

/** Fixed-capacity table of module slots backed by one buffer per graph input. */
export class SlotTable {
  private ranks: Ranks = { key: 1, value: 1, lora: 1, prefix: 1 };
  private buffers = new Map<ModuleInputName, SlotBuffer>();
  /** slot index -> module in it (index 0 is always null, the zero module). */
  private readonly occupant: (SlotModule | null)[];
  private readonly lastUse: number[];
  private clock = 0;

  /** @param capacity Number of module slots besides slot 0; at least the number of distinct modules in one batch. */
  constructor(
    private readonly config: ModelConfig,
    readonly capacity: number,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new SlotCapacityError(`slot capacity must be a positive integer, got ${capacity}`);
    this.occupant = new Array<SlotModule | null>(capacity + 1).fill(null);
    this.lastUse = new Array<number>(capacity + 1).fill(0);
    this.allocate();
  }

  private shapes(): Record<ModuleInputName, number[]> {
    const { numLayers: L, numHeads: H, numKeyValueHeads: KVH, headDim: d, hiddenSize: D } = this.config;
    const S = this.capacity + 1;
    const { key: rk, value: rv, lora: r, prefix: P } = this.ranks;
    return {
      [MODULE_INPUT.keyDownWeight]: [S, L, H, d, rk],
      [MODULE_INPUT.keyDownBias]: [S, L, H, rk],
      [MODULE_INPUT.keyUpWeight]: [S, L, H, rk, d],
      [MODULE_INPUT.keyUpBias]: [S, L, H, d],
      [MODULE_INPUT.valueDownWeight]: [S, L, H, d, rv],
      [MODULE_INPUT.valueDownBias]: [S, L, H, rv],
      [MODULE_INPUT.valueUpWeight]: [S, L, H, rv, D],
      [MODULE_INPUT.valueUpBias]: [S, L, D],
      [MODULE_INPUT.loraA]: [S, L, r, D],
      [MODULE_INPUT.loraB]: [S, L, H * d, r],
      [MODULE_INPUT.loraBias]: [S, L, H * d],
      [MODULE_INPUT.loraScale]: [S],
      [MODULE_INPUT.loraValueA]: [S, L, r, D],
      [MODULE_INPUT.loraValueB]: [S, L, KVH * d, r],
      [MODULE_INPUT.prefixKey]: [S, L, KVH, P, d],
      [MODULE_INPUT.prefixValue]: [S, L, KVH, P, d],
      [MODULE_INPUT.prefixMask]: [S, P],
    } as Record<ModuleInputName, number[]>;
  }

  private allocate(): void {
    const buffers = new Map<ModuleInputName, SlotBuffer>();
    for (const [name, dims] of Object.entries(this.shapes()) as [ModuleInputName, number[]][]) {
      buffers.set(name, { data: new Float32Array(dims.reduce((a, b) => a * b, 1)), dims });
    }
    this.buffers = buffers;
    for (let slot = 1; slot <= this.capacity; slot++) {
      const module = this.occupant[slot];
      if (module) this.write(slot, module);
    }
  }

  /** Graph inputs for the current table contents. Buffers stay valid until the next `slotsFor`. */
  feeds(): ReadonlyMap<ModuleInputName, SlotBuffer> {
    return this.buffers;
  }

  /** Bytes held by the table's buffers. */
  get sizeBytes(): number {
    let total = 0;
    for (const b of this.buffers.values()) total += b.data.byteLength;
    return total;
  }

  /**
   * Returns the slot of each module (0 for null), loading modules that are not in the table into
   * the least recently used slots that this call does not need.
   */
  slotsFor(modules: readonly (SlotModule | null)[]): number[] {
    const distinct = [...new Set(modules.filter((m): m is SlotModule => m !== null))];
    if (distinct.length > this.capacity) {
      throw new SlotCapacityError(`a batch uses ${distinct.length} distinct modules but the slot table has ${this.capacity} slots; split the batch or raise the slot capacity`);
    }
    const needed: Ranks = { ...this.ranks };
    for (const m of distinct) {
      const ranks = ranksOf(m);
      needed.key = Math.max(needed.key, ranks.key);
      needed.value = Math.max(needed.value, ranks.value);
      needed.lora = Math.max(needed.lora, ranks.lora);
      needed.prefix = Math.max(needed.prefix, ranks.prefix);
    }
    if (needed.key !== this.ranks.key || needed.value !== this.ranks.value || needed.lora !== this.ranks.lora || needed.prefix !== this.ranks.prefix) {
      this.ranks = needed;
      this.allocate();
    }
    this.clock += 1;
    const slotOf = new Map<SlotModule, number>();
    const pinned = new Set<number>();
    for (const m of distinct) {
      const slot = this.occupant.indexOf(m);
      if (slot > 0) {
        slotOf.set(m, slot);
        pinned.add(slot);
        this.lastUse[slot] = this.clock;
      }
    }
    for (const m of distinct) {
      if (slotOf.has(m)) continue;
      let victim = -1;
      for (let slot = 1; slot <= this.capacity; slot++) {
        if (pinned.has(slot)) continue;
        if (victim < 0 || this.lastUse[slot] < this.lastUse[victim]) victim = slot;
      }
      this.occupant[victim] = m;
      this.write(victim, m);
      slotOf.set(m, victim);
      pinned.add(victim);
      this.lastUse[victim] = this.clock;
    }
    return modules.map((m) => (m ? (slotOf.get(m) as number) : 0));
  }

  /** Removes a module from the table (for example after its file was replaced), zeroing its slot. */
  evict(module: SlotModule): void {
    const slot = this.occupant.indexOf(module);
    if (slot <= 0) return;
    this.occupant[slot] = null;
    this.clearSlot(slot);
  }

  private clearSlot(slot: number): void {
    for (const buffer of this.buffers.values()) {
      const perSlot = buffer.data.length / buffer.dims[0];
      buffer.data.fill(0, slot * perSlot, (slot + 1) * perSlot);
    }
  }

  /**
   * Copies `source` ([L, ...inner] from the module file, one tensor per layer) into `slot`, padding
   * the rank axis `rankAxis` of each per-layer block (an axis of the inner dims) with zeros.
   */
  private copyPadded(name: ModuleInputName, slot: number, layer: number, source: HostTensor): void {
    const buffer = this.buffers.get(name) as SlotBuffer;
    const inner = buffer.dims.slice(2); // per-layer dims in the table
    const perLayer = inner.reduce((a, b) => a * b, 1);
    const base = (slot * buffer.dims[1] + layer) * perLayer;
    const src = source.shape;
    if (src.length !== inner.length) throw new SlotCapacityError(`${name}: module tensor rank ${src.length} does not match ${inner.length}`);
    // Generic strided copy: iterate over the source index space and map to the table's strides.
    const tableStrides = new Array<number>(inner.length).fill(1);
    for (let i = inner.length - 2; i >= 0; i--) tableStrides[i] = tableStrides[i + 1] * inner[i + 1];
    const lastDim = src[src.length - 1];
    const outerCount = source.data.length / lastDim;
    const index = new Array<number>(src.length - 1).fill(0);
    for (let row = 0; row < outerCount; row++) {
      let offset = base;
      for (let i = 0; i < index.length; i++) offset += index[i] * tableStrides[i];
      buffer.data.set(source.data.subarray(row * lastDim, (row + 1) * lastDim), offset);
      for (let i = index.length - 1; i >= 0; i--) {
        index[i] += 1;
        if (index[i] < src[i]) break;
        index[i] = 0;
      }
    }
  }

  private write(slot: number, m: SlotModule): void {
    this.clearSlot(slot);
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      for (const [name, suffix] of tensorSuffixes(m)) {
        const tensor = m.tensors.get(`layers.${layer}.${suffix}`);
        if (!tensor) throw new SlotCapacityError(`module is missing the tensor layers.${layer}.${suffix} for ${name}; load modules through readModule, which checks every tensor`);
        this.copyPadded(name, slot, layer, tensor);
      }
    }
    const scale = this.buffers.get(MODULE_INPUT.loraScale) as SlotBuffer;
    scale.data[slot] = loraScaleOf(m);
    if (m.method === 'prefix') {
      const mask = this.buffers.get(MODULE_INPUT.prefixMask) as SlotBuffer;
      const width = mask.dims[1];
      mask.data.fill(1, slot * width, slot * width + m.prefixLength);
    }
  }
}

/** Returns alpha / rank of the module's LoRA, or 0 when it has none. */
function loraScaleOf(m: SlotModule): number {
  if (m.method === 'prefix') return 0;
  if (m.method === 'lora') return m.alpha / m.rank;
  return m.loraQ ? m.loraQ.alpha / m.loraQ.rank : 0;
}

/** Lists the stacked inputs that a module fills, each with its module-file tensor name after `layers.{i}.`. */
export function tensorSuffixes(m: SlotModule): [ModuleInputName, string][] {
  if (m.method === 'prefix') {
    return [
      [MODULE_INPUT.prefixKey, 'prefix.key'],
      [MODULE_INPUT.prefixValue, 'prefix.value'],
    ];
  }
  if (m.method === 'lora') {
    return [
      [MODULE_INPUT.loraA, 'lora.q.A'],
      [MODULE_INPUT.loraB, 'lora.q.B'],
      [MODULE_INPUT.loraValueA, 'lora.v.A'],
      [MODULE_INPUT.loraValueB, 'lora.v.B'],
    ];
  }
  const pairs: [ModuleInputName, string][] = [
    [MODULE_INPUT.valueDownWeight, 'inducer.value.down.weight'],
    [MODULE_INPUT.valueDownBias, 'inducer.value.down.bias'],
    [MODULE_INPUT.valueUpWeight, 'inducer.value.up.weight'],
    [MODULE_INPUT.valueUpBias, 'inducer.value.up.bias'],
  ];
  if (m.keyRank >= 2) {
    pairs.push(
      [MODULE_INPUT.keyDownWeight, 'inducer.key.down.weight'],
      [MODULE_INPUT.keyDownBias, 'inducer.key.down.bias'],
      [MODULE_INPUT.keyUpWeight, 'inducer.key.up.weight'],
      [MODULE_INPUT.keyUpBias, 'inducer.key.up.bias'],
    );
  }
  if (m.loraQ) {
    pairs.push([MODULE_INPUT.loraA, 'lora_q.A'], [MODULE_INPUT.loraB, 'lora_q.B']);
    if (m.loraQ.bias) pairs.push([MODULE_INPUT.loraBias, 'lora_q.bias']);
  }
  return pairs;
}
