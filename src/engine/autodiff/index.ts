export * from './adamw';
export * from './flat-params';
export * from './gradients';
export * from './memory-estimate';
export * from './train-step';
export * from './trainer';
