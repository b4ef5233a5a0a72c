import { Field, Float, ID, ObjectType, registerEnumType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { BIGINT_AS_NUMBER } from './bigint';
import { User } from './user';

/** The files a model version's weights are exported as (services/weight-export.ts). */
export enum WeightFormat {
  /** The LoRA as diffusers' `save_lora_weights` names it: `unet.<module>.lora.down.weight` / `.lora.up.weight`. */
  DIFFUSERS_LORA = 'DIFFUSERS_LORA',
  /** The LoRA as kohya's sd-scripts (and A1111, ComfyUI) name it: `lora_unet_<module>.lora_down.weight` / `.lora_up.weight` / `.alpha`. */
  KOHYA_LORA = 'KOHYA_LORA',
  /** The whole UNet (a LoRA merged into the base's), as `unet/diffusion_pytorch_model.safetensors`. */
  DIFFUSERS_UNET = 'DIFFUSERS_UNET',
  /** A diffusers pack folder in a tar: model_index.json, unet/ (fine-tune merged), vae/, text_encoder/, tokenizer/, scheduler/. */
  DIFFUSERS_PACK = 'DIFFUSERS_PACK',
}
registerEnumType(WeightFormat, { name: 'WeightFormat' });

/** A file of a model version's weights, built for its owner and downloadable from `url` until it expires. */
@ObjectType({ description: 'A file of a model version’s weights; download it from `url` (with your API key) before `expiresAt`.' })
@Entity('weight_export')
@Index(['expiresAt'])
export class WeightExport {
  @Field(() => ID)
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Index()
  @Column({ type: 'uuid' })
  ownerId: string;

  @ManyToOne(() => User, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'ownerId' })
  owner?: User;

  @Field(() => ID)
  @Column({ type: 'uuid' })
  modelId: string;

  @Field(() => ID, { nullable: true, description: "The version exported; null: the model had none (the base model's weights)." })
  @Column({ type: 'uuid', nullable: true })
  versionId: string | null;

  @Field(() => WeightFormat)
  @Column({ type: 'enum', enum: WeightFormat, enumName: 'weight_format' })
  format: WeightFormat;

  @Column({ type: 'varchar', length: 1024 })
  objectKey: string;

  @Field(() => String, { description: 'What to save the download as.' })
  @Column({ type: 'varchar', length: 255 })
  fileName: string;

  @Field(() => Float)
  @Column({ type: 'bigint', transformer: BIGINT_AS_NUMBER })
  bytes: number;

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;

  @Field(() => Date, { description: 'The download is gone after this.' })
  @Column({ type: 'timestamptz' })
  expiresAt: Date;
}
